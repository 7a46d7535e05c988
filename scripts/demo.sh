#!/usr/bin/env bash
# The seed's proof of concept with rastro in Beyla's place, on this machine:
# the Perl/Mojolicious app, rastro reading the seed's beyla.yml unchanged, the
# seed's curl requests plus some load, then the RED numbers per route and the
# recent traces. DEMO_ONCE=1 stops after showing them (used by the tests).
#
# Environment (all optional):
#   DEMO_PORT        the app's port (default 1337, the seed's; another port runs
#                    copies of app.pl and beyla.yml with only the port changed)
#   DEMO_PROM_PORT   rastro's Prometheus port (default 9400, rastro's default)
#   RASTRO_BIN       the rastro binary to run (default ./rastro, built by make)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "demo: rastro loads eBPF programs: run as root (sudo make demo)" >&2
	exit 1
fi
scripts/install-deps.sh demo
if [ -n "${RASTRO_BIN:-}" ]; then
	rastro=$RASTRO_BIN
else
	make -s
	rastro=./rastro
fi

port=${DEMO_PORT:-1337}
prom_port=${DEMO_PROM_PORT:-9400}
for p in "$port" "$prom_port"; do
	if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
		echo "demo: port $p is already in use (set DEMO_PORT / DEMO_PROM_PORT)" >&2
		exit 1
	fi
done

work=$(mktemp -d /tmp/rastro-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

app=examples/perlapp/app.pl
config=examples/perlapp/beyla.yml
changed=" (unchanged)"
if [ "$port" != 1337 ]; then
	sed "s/:1337'/:$port'/" "$app" >"$work/app.pl"
	sed "s/open_ports: 1337/open_ports: $port/" "$config" >"$work/beyla.yml"
	app=$work/app.pl
	config=$work/beyla.yml
	changed=" (only the port changed: $port)"
fi

echo "== starting the seed's Perl app ($app) on :$port"
perl "$app" >"$work/app.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	(exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
	sleep 0.1
done

# The trace printer is asked for: rastro's stdout is a file here, and the seed's
# config names an OTLP endpoint, so by default it would stay off.
echo "== starting rastro with the seed's beyla.yml$changed"
RASTRO_TRACE_PRINTER=text RASTRO_PROMETHEUS_PORT=$prom_port "$rastro" --config "$config" \
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
elapsed=$(echo "$(date +%s.%N) - $started" | bc)

metrics=http://127.0.0.1:$prom_port/metrics
echo
echo "== RED per route, read from rastro's Prometheus endpoint ($metrics)"
# 303 requests were sent: wait (up to 10 s) until rastro has measured them all.
python3 scripts/red_table.py "$metrics" --seconds "$elapsed" --expect 303
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
	rm -rf "$work"
	exit 0
fi
echo "rastro keeps running (logs in $work). Try: curl http://localhost:$port/products"
echo "Metrics: curl $metrics    Stop: Ctrl-C"
tail -n 0 -f "$work/traces.log" &
pids+=($!)
wait "${pids[1]}"
