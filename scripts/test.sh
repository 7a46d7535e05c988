#!/usr/bin/env bash
# Runs every test: unit (ASan + UBSan), fuzz (bounded), end to end (root).
# Installs what the tests need on a fresh Debian 12 machine first.
#   scripts/test.sh              everything
#   scripts/test.sh --unit-only  unit and fuzz tests only
#   scripts/test.sh --asan       the end-to-end tests against the agent built with
#                                ASan + UBSan (make asan: build-asan/rastro)
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
for d in tests/e2e/otlp tests/deploy; do
	if [ -f "$d/package.json" ]; then
		(cd "$d" && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; })
	fi
done

args=()
if [ "${1:-}" = --unit-only ]; then
	shift
	args=(tests/test_unit.py)
elif [ "${1:-}" = --asan ]; then
	shift
	make -s -j"$(nproc)" asan
	export RASTRO_BIN=$PWD/build-asan/rastro
	# A small quarantine: the tests that bound rastro's memory growth still
	# hold (the default keeps 256 MiB of freed memory resident).
	export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=1:detect_leaks=1:abort_on_error=0}
	args=(tests/e2e)
fi
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q -rs "${args[@]:-tests}" "$@"
