#!/usr/bin/env bash
# rastro's benchmark (`make bench`): builds the helper programs, then
# bench/bench.py runs every workload itself and prints one table.
#   bench/run.sh [--quick] [--pairs N] [--only 5k,20k,...] [--json FILE]
#   bench/run.sh --ab OLD_BINARY NEW_BINARY [--rounds N]   (bench/ab.py: two
#                builds side by side on one nginx, their CPU per request)
#   bench/run.sh --ablate [--workload nginx|pgbench] VARIANT...   (bench/ablate.py:
#                builds with one part of a traced event left out, their
#                programs' time per request)
#   bench/run.sh --profile [--rounds N]   (bench/profile.py: where nginx's
#                CPU goes with and without rastro at saturation; needs perf)
# RASTRO_BIN / RASTRO_BUILD select another build (default ./rastro, build/).
# A benchmark, not a test: it never fails on a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${RASTRO_BUILD:-build}
export RASTRO_BIN=${RASTRO_BIN:-$PWD/rastro}
export RASTRO_BUILD=$BUILD_DIR
if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root to load BPF programs; nothing measured" >&2
	exit 0
fi
for tool in nginx wrk pgbench redis-server redis-benchmark; do
	command -v "$tool" >/dev/null || missing="${missing:-} $tool"
done
if [ -n "${missing:-}" ]; then
	echo "bench: installing$missing" >&2
	apt-get install -y -qq nginx wrk postgresql redis-server redis-tools >/dev/null
fi
mkdir -p "$BUILD_DIR/bench"
for prog in loadgen otlp_sink syscalls; do
	gcc -O2 -g -Wall -Wextra -Werror -o "$BUILD_DIR/bench/$prog" "bench/$prog.c"
done
gcc -O2 -g -Wall -Wextra -Werror -o "$BUILD_DIR/bench/bpf_floor" bench/bpf_floor.c -lbpf
make -s BUILD="$BUILD_DIR" "$BUILD_DIR/bench/noop.bpf.o" "$BUILD_DIR/bench/untraced"
if [ "${1:-}" = --ab ]; then
	shift
	exec /usr/bin/python3 bench/ab.py "$@"
fi
if [ "${1:-}" = --profile ]; then
	shift
	exec /usr/bin/python3 bench/profile.py "$@"
fi
if [ "${1:-}" = --ablate ]; then
	shift
	exec /usr/bin/python3 bench/ablate.py "$@"
fi
exec /usr/bin/python3 bench/bench.py "$@"
