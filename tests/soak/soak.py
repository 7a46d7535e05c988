#!/usr/bin/env python3
"""Soak test: mixed traffic for a fixed time under one rastro, then exact
accounting and memory checks.

Traffic (real servers, real clients, fixed rates, on loopback):
  - HTTP to nginx, static answers                 (tests/soak/httpload.c)
  - HTTP to nginx proxied to the seed's Perl app   (tests/soak/httpload.c)
  - PostgreSQL SELECTs and Redis SET/GET from one Perl process with DBD::Pg
    and Redis.pm (tests/soak/dbload.pl)
rastro traces nginx (server and client spans), the Perl app (server spans) and
the database client (client spans); it exports spans and metrics over OTLP to a
counting receiver that decodes with the official OpenTelemetry code
(tests/soak/otlp_count.js), and serves its Prometheus endpoint.

Checks (each printed; exit status 1 if one fails):
  - rastro's RSS grows by less than 1 MiB from the end of the warm-up to the end
    (the least RSS of the last 10 s: a transient backlog's queue is not a leak);
  - no event lost in the kernel or in the parsers (so that requests, not only
    events, can be counted exactly);
  - spans: received + counted drops == generated, exactly, per service and kind
    (the generators' own counts: httpload's answered requests, dbload's calls);
  - metrics: the last OTLP export and the Prometheus endpoint count exactly the
    generated requests per service and metric, plus counted drops;
  - rastro flushes and exits 0 on SIGTERM.

  python3 tests/soak/soak.py --seconds 600            the 10-minute form
  python3 tests/soak/soak.py --seconds 60 --scale 0.5 a lighter, shorter one
Needs root (BPF), nginx, PostgreSQL 15, Redis, perl with Mojolicious,
DBD::Pg and Redis.pm, node with tests/e2e/otlp's node_modules. RASTRO_BIN picks
the binary (default ./rastro).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "e2e")]

from conftest import APPS, RASTRO, free_port, wait_for, wait_port  # noqa: E402
from db_fixtures import Postgres, Redis  # noqa: E402
from test_reliability_helpers import metric, parse_metrics, rss_kib, scrape  # noqa: E402

# Requests per second by default: 10,000 in all.
# The seed's Perl app (Mojolicious, one process) answers a few hundred
# requests per second on this machine: nginx's static answers carry the rate.
RATES = {"nginx_static": 6100, "nginx_perl": 100, "pg": 800, "redis": 3000}

NGINX_CONF = """
daemon off;
user root;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    # Mojolicious closes a keep-alive connection after 100 requests: nginx
    # closes its own after 90, so that it never sends on a connection the
    # app is closing (it would then retry, a second upstream request).
    upstream perlapp {{
        server 127.0.0.1:{perl_port};
        keepalive 16;
        keepalive_requests 90;
        keepalive_timeout 10s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /static {{ return 200 "static ok\\n"; }}
        location /app/ {{
            proxy_pass http://perlapp/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Procs:
    """Every process started here, stopped (whole process group) at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log, **kw):
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait()


def build_httpload(tmp):
    out = Path(tmp) / "httpload"
    subprocess.run(["cc", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                    str(HERE / "httpload.c")], check=True)
    return out


def counts(recv_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{recv_port}/counts", timeout=10) as r:
        return json.loads(r.read())


def check(results, name, ok, detail):
    results.append({"check": name, "ok": bool(ok), "detail": detail})
    print(f"  [{'ok' if ok else 'FAILED'}] {name}: {detail}", flush=True)


def run(seconds, warmup, scale=1.0, tmp=None, log=print):
    """Runs the soak; returns {"ok": bool, "checks": [...], "numbers": {...}}."""
    own_tmp = tmp is None
    tmp = Path(tmp or tempfile.mkdtemp(prefix="rastro-soak-"))
    rates = {k: max(1, int(v * scale)) for k, v in RATES.items()}
    procs = Procs()
    pg, redis = Postgres(), Redis()
    results, numbers = [], {"seconds": seconds, "warmup": warmup, "rates": rates}
    applog = open(tmp / "processes.log", "w")
    try:
        httpload = build_httpload(tmp)
        pg.start()
        redis.start()
        perl_port, nginx_port, recv_port, prom_port, driver_port = (free_port() for _ in range(5))
        procs.start(["perl", str(APPS / "app.pl"), str(perl_port)], applog)
        wait_port(perl_port)
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, port=nginx_port,
                                                          perl_port=perl_port))
        procs.start(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], applog)
        wait_port(nginx_port)
        procs.start(["node", str(HERE / "otlp_count.js"), str(recv_port)], applog)
        wait_port(recv_port)
        driver = procs.start(["perl", str(HERE / "dbload.pl"), str(driver_port), str(pg.port),
                              str(redis.port), str(rates["pg"]), str(rates["redis"]),
                              str(seconds)], applog, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert driver.stdout.readline() == "ready\n"

        cfg = tmp / "rastro.yml"
        cfg.write_text(
            "log_level: INFO\n"
            "discovery:\n  instrument:\n"
            f"    - open_ports: {nginx_port}\n      name: nginx\n"
            f"    - open_ports: {perl_port}\n      name: perlapp\n"
            f"    - open_ports: {driver_port}\n      name: dbload\n"
            "otel_traces_export:\n"
            f"  endpoint: http://127.0.0.1:{recv_port}\n"
            "  max_queue_size: 65536\n  max_export_batch_size: 512\n"
            "  schedule_delay: 200ms\n"
            "otel_metrics_export:\n"
            f"  endpoint: http://127.0.0.1:{recv_port}\n  interval: 5s\n"
            "otel_export:\n  max_queue_bytes: 64MiB\n"
            f"prometheus_export:\n  port: {prom_port}\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
        rastro_err = open(tmp / "rastro.log", "w")
        rastro = subprocess.Popen([str(RASTRO), "--config", str(cfg)], stdout=subprocess.DEVNULL,
                                  stderr=rastro_err, env=env, start_new_session=True)
        procs.procs.append(rastro)
        wait_port(prom_port, timeout=30)

        def traced():
            return metric(parse_metrics(scrape(prom_port)), "rastro_instrumented_processes")
        # nginx master and worker, the Perl app, the driver
        wait_for(lambda: traced() == 4, timeout=20, what="the four processes to be traced")

        log(f"soak: {seconds} s at {sum(rates.values())} req/s "
            f"({', '.join(f'{k} {v}' for k, v in rates.items())}), warm-up {warmup} s")
        t0 = time.time()
        gens = {
            "nginx_static": procs.start(
                [str(httpload), str(nginx_port), "/static", str(rates["nginx_static"]), "64",
                 str(seconds)], applog, stdout=subprocess.PIPE, text=True),
            "nginx_perl": procs.start(
                [str(httpload), str(nginx_port), "/app/users/7", str(rates["nginx_perl"]), "16",
                 str(seconds)], applog, stdout=subprocess.PIPE, text=True),
        }
        driver.stdin.write("go\n")
        driver.stdin.flush()

        rss = []  # (seconds since start, KiB)
        while any(g.poll() is None for g in gens.values()) or driver.poll() is None:
            rss.append((time.time() - t0, rss_kib(rastro.pid)))
            if rastro.poll() is not None:
                raise RuntimeError("rastro exited during the soak")
            time.sleep(1)
        gen = {k: json.loads(g.stdout.read()) for k, g in gens.items()}
        gen["db"] = json.loads(driver.stdout.read())
        numbers["generators"] = gen
        log(f"soak: generators done after {time.time() - t0:.0f} s: {json.dumps(gen)}")

        static, proxied = gen["nginx_static"]["completed"], gen["nginx_perl"]["completed"]
        db = gen["db"]
        # Spans per (service, kind): what each request makes. The driver's
        # connections add nothing but one QUIT at the end (Redis.pm's quit).
        want_spans = {
            ("nginx", "SPAN_KIND_SERVER"): static + proxied,
            ("nginx", "SPAN_KIND_CLIENT"): proxied,
            ("perlapp", "SPAN_KIND_SERVER"): proxied,
            ("dbload", "SPAN_KIND_CLIENT"): db["pg"] + db["redis_set"] + db["redis_get"] + 1,
        }
        # Should nginx still retry an upstream request, that is one more
        # client request, which its error log tells.
        retries = sum("from upstream" in ln for ln in
                      (tmp / "nginx-error.log").read_text().splitlines())
        numbers["nginx_upstream_retries"] = retries
        want_spans[("nginx", "SPAN_KIND_CLIENT")] += retries
        generated = sum(want_spans.values())
        last, stable_since = -1, time.time()
        while time.time() - stable_since < 2 and time.time() - t0 < seconds + 60:
            n = metric(parse_metrics(scrape(prom_port)), "rastro_requests_total")
            if n != last:
                last, stable_since = n, time.time()
            time.sleep(0.25)
        prom = parse_metrics(scrape(prom_port))
        numbers["rastro_requests_total"] = metric(prom, "rastro_requests_total")

        rastro.send_signal(signal.SIGTERM)
        rc = rastro.wait(30)
        rastro_err.close()
        got = counts(recv_port)

        # ---- checks
        for g in ("nginx_static", "nginx_perl"):
            check(results, f"{g}: every request answered 200", gen[g]["errors"] == 0
                  and gen[g]["sent"] == gen[g]["completed"] and not gen[g]["non_200"], gen[g])
        check(results, "rastro exits 0 after SIGTERM", rc == 0, f"exit status {rc}")
        # Lasting growth (a leak), not a transient peak: the least RSS of the
        # last 10 s against the RSS at the end of the warm-up. A moment of
        # backlog (the receiver slow for a second) raises RSS while the
        # queue holds spans, within max_queue_size, and gives it back.
        after = [kib for t, kib in rss if t >= warmup]
        base = after[0] if after else rss[-1][1]
        last = [kib for t, kib in rss if t >= rss[-1][0] - 10] or [base]
        growth = min(last) - base
        numbers["rss_kib"] = {"after_warmup": base, "max": max(after or [base]),
                              "last_10s_min": min(last), "end": rss[-1][1], "samples": len(rss),
                              "every_10s": [kib for i, (t, kib) in enumerate(rss) if i % 10 == 0]}
        check(results, "RSS grows by less than 1 MiB after the warm-up", growth < 1024,
              f"{base} KiB at {warmup} s, {min(last)} KiB at least in the last 10 s "
              f"(+{growth} KiB; at most {max(after or [base])} KiB after the warm-up), "
              f"{rss[-1][1]} KiB at the end")
        lost = {f"{dict(ls)['source']}/{dict(ls)['cause']}": v for (n, ls), v in prom.items()
                if n == "rastro_events_lost_total" and v}
        truncated = metric(prom, "rastro_payloads_truncated_total")
        if truncated:
            lost["payloads_truncated"] = truncated
        # Events a CPU sent ahead of events another CPU held, which the agent
        # read after them (docs/architecture.md): reported. Those it had to
        # parse out of order (their batch did not come within a second) are
        # a fault, like a loss.
        numbers["sent_ahead"] = metric(prom, "rastro_events_sent_ahead_total")
        numbers["reordered"] = metric(prom, "rastro_events_reordered_total")
        numbers["batches_taken_over"] = metric(prom, "rastro_event_batches_taken_over_total")
        unordered = metric(prom, "rastro_events_unordered_total")
        if unordered:
            lost["unordered"] = unordered
        check(results, "no event lost in the kernel or the parsers or unordered, no payload cut",
              not lost, lost or "none")
        numbers["lost"] = lost

        spans = {}
        for key, n in got["spans"].items():
            svc, kind, _ = key.split("|", 2)
            spans[(svc, kind)] = spans.get((svc, kind), 0) + n
        dropped_spans = (metric(prom, "rastro_spans_dropped_total")
                         + metric(prom, "rastro_export_dropped_items_total", signal="traces"))
        numbers["spans"] = {f"{s}/{k}": v for (s, k), v in spans.items()}
        numbers["spans_dropped"] = dropped_spans
        check(results, "spans: received + counted drops == generated",
              sum(spans.values()) + dropped_spans == generated,
              f"{sum(spans.values())} received + {dropped_spans:.0f} dropped, "
              f"{generated} generated")
        if not dropped_spans:
            check(results, "spans per service and kind == generated", spans == want_spans,
                  {f"{s}/{k}": (spans.get((s, k), 0), v) for (s, k), v in want_spans.items()})
        by_name = {key.split("|", 2)[2]: n for key, n in got["spans"].items()
                   if key.startswith("dbload|")}
        check(results, "database spans by operation == the driver's calls",
              (by_name.get("SELECT products"), by_name.get("SET"), by_name.get("GET"))
              == (db["pg"], db["redis_set"], db["redis_get"]), by_name)

        # metrics: the last cumulative export, and the Prometheus endpoint
        want_metrics = {
            ("nginx", "http.server.request.duration"): static + proxied,
            ("nginx", "http.client.request.duration"): proxied + retries,
            ("perlapp", "http.server.request.duration"): proxied,
            ("dbload", "db.client.operation.duration"): want_spans[("dbload", "SPAN_KIND_CLIENT")],
        }
        otlp_m = {}
        for key, v in got["metrics"].items():
            svc, name, _ = key.split("|", 2)
            if (svc, name) in want_metrics:
                otlp_m[(svc, name)] = otlp_m.get((svc, name), 0) + v
        dropped_points = (metric(prom, "rastro_metric_records_dropped_total")
                          + metric(prom, "rastro_export_dropped_items_total", signal="metrics"))
        check(results, "OTLP metrics: the last export counts every generated request",
              otlp_m == want_metrics and dropped_points == 0,
              {f"{s}/{n}": (otlp_m.get((s, n), 0), v) for (s, n), v in want_metrics.items()})
        prom_names = {"http.server.request.duration": "http_server_request_duration_seconds_count",
                      "http.client.request.duration": "http_client_request_duration_seconds_count",
                      "db.client.operation.duration": "db_client_operation_duration_seconds_count"}
        prom_m = {(s, n): metric(prom, prom_names[n], service_name=s) for s, n in want_metrics}
        check(results, "Prometheus endpoint counts every generated request",
              prom_m == want_metrics,
              {f"{s}/{n}": (prom_m[(s, n)], v) for (s, n), v in want_metrics.items()})
        check(results, "the OTLP receiver decoded every request", got["decode_errors"] == 0,
              f"{got['requests']} requests, {got['bytes']} bytes, "
              f"{got['decode_errors']} not decodable")
        numbers["achieved_rate"] = round((static + proxied + db["pg"] + db["redis_set"]
                                          + db["redis_get"]) / seconds)
        log(f"soak: {numbers['achieved_rate']} requests/s achieved; {json.dumps(numbers)}")
    finally:
        procs.stop_all()
        applog.close()
        pg.stop()
        redis.stop()
        if own_tmp and all(r["ok"] for r in results) and results:
            shutil.rmtree(tmp, ignore_errors=True)
        elif results:
            log(f"soak: logs kept in {tmp}")
    return {"ok": bool(results) and all(r["ok"] for r in results), "checks": results,
            "numbers": numbers}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=None,
                    help="seconds before the RSS baseline (default: a fifth, at least 120: "
                         "trace contexts live 60 s)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every rate")
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: needs root (rastro loads BPF programs)")
    warmup = a.warmup if a.warmup is not None else max(120, a.seconds // 5)
    res = run(a.seconds, warmup, a.scale)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    print("soak: PASSED" if res["ok"] else "soak: FAILED")
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
