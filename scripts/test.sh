#!/usr/bin/env bash
# Runs every test: unit (ASan + UBSan), fuzz (bounded), end to end (root).
# Installs what the tests need on a fresh Debian 12 machine first.
#   scripts/test.sh              everything
#   scripts/test.sh --unit-only  unit and fuzz tests only
#   scripts/test.sh -k pattern   extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
	scripts/install-deps.sh test
else
	echo "rastro: not root: end-to-end tests will be skipped (they load BPF programs)" >&2
	scripts/install-deps.sh test --check-only || true
fi
make -s -j"$(nproc)" rastro unit-bins fuzz-bins
if [ -f tests/e2e/otlp/package.json ]; then
	(cd tests/e2e/otlp && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; })
fi

args=()
if [ "${1:-}" = --unit-only ]; then
	shift
	args=(tests/test_unit.py)
fi
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q -rs "${args[@]:-tests}" "$@"
