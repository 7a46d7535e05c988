#!/usr/bin/env bash
# The seed's proof of concept with rastro in Beyla's place, on this machine:
# the Perl/Mojolicious app, rastro reading the seed's beyla.yml unchanged, the
# seed's curl requests plus some load, then the RED numbers per route and the
# recent traces. DEMO_ONCE=1 stops after showing them (used by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "demo: rastro loads eBPF programs: run as root (sudo make demo)" >&2
	exit 1
fi
scripts/install-deps.sh demo
make -s

port=1337
if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
	echo "demo: port $port is already in use; the seed's app needs it" >&2
	exit 1
fi

work=$(mktemp -d /tmp/rastro-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "== starting the seed's Perl app (examples/perlapp/app.pl) on :$port"
perl examples/perlapp/app.pl >"$work/app.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
	sleep 0.1
done

echo "== starting rastro with the seed's beyla.yml (unchanged)"
RASTRO_TRACE_PRINTER=text ./rastro --config examples/perlapp/beyla.yml \
	>"$work/traces.log" 2>"$work/rastro.log" &
pids+=($!)
for _ in $(seq 100); do
	grep -q "instrumenting pid" "$work/rastro.log" && break
	sleep 0.1
done
grep "instrumenting pid" "$work/rastro.log" || { cat "$work/rastro.log"; exit 1; }

echo "== the seed's requests"
started=$(date +%s.%N)
echo "\$ curl http://localhost:$port/";          curl -s "http://localhost:$port/"; echo
echo "\$ curl http://localhost:$port/products";  curl -s "http://localhost:$port/products"; echo
echo "\$ curl http://localhost:$port/error";     curl -s -o /dev/null -w "HTTP %{http_code}\n" "http://localhost:$port/error"
echo "== some load: 300 more requests on keep-alive connections"
curl -s -o /dev/null "http://127.0.0.1:$port/?n=[1-100]"
curl -s -o /dev/null "http://127.0.0.1:$port/products?n=[1-150]"
curl -s -o /dev/null "http://127.0.0.1:$port/error/[1-50]"
sleep 1
elapsed=$(echo "$(date +%s.%N) - $started" | bc)

echo
echo "== RED per route, read from rastro's Prometheus endpoint (http://127.0.0.1:9400/metrics)"
python3 scripts/red_table.py http://127.0.0.1:9400/metrics --seconds "$elapsed"
echo
echo "== recent traces (trace printer)"
tail -n 6 "$work/traces.log"
echo
echo "== rastro's log"
grep -v "libbpf" "$work/rastro.log" | tail -n 5
echo
echo "The seed's OTLP endpoint (http://grafana:4318) does not exist here: rastro retries it"
echo "quietly; with grafana/otel-lgtm running, deploy/docker-compose.yml sends it everything."
if [ "${DEMO_ONCE:-0}" = 1 ]; then
	exit 0
fi
echo "rastro keeps running (logs in $work). Try: curl http://localhost:$port/products"
echo "Metrics: curl http://127.0.0.1:9400/metrics    Stop: Ctrl-C"
tail -n 0 -f "$work/traces.log" &
pids+=($!)
wait "${pids[1]}"
