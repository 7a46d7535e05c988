"""RED metrics end to end: a real Prometheus (Debian `prometheus`) scrapes
rastro's endpoint while the tests send a known mix of requests to the seed's
Perl app; PromQL over Prometheus' HTTP API must give the exact counts. Also:
routes patterns and ignored patterns, the overflow series, `promtool check
metrics`, the port rules, and the OTLP metrics export decoded with the
official OpenTelemetry code (tests/e2e/otlp), including while the backend
hangs (the endpoint keeps answering)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import Rastro, config_for_ports, free_port, needs_root, wait_for, wait_port
from otlp_fixtures import attrs, otlp_receiver  # noqa: F401  (fixture)

pytestmark = [needs_root,
              pytest.mark.skipif(not shutil.which("prometheus"),
                                 reason="Debian package prometheus is not installed")]

HELLO = b"Hello, eBPF + Beyla + Perl!"


# ---- clients

def get(port, path, method="GET", timeout=10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw_get(port, target):
    """GET with a request target sent byte for byte (quotes, invalid UTF-8)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def scrape(port, path="/metrics", method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


# ---- a real Prometheus

class Prometheus:
    def __init__(self, tmp_path, target):
        self.port = free_port()
        self.dir = Path(tmp_path) / f"prometheus-{self.port}"
        (self.dir / "data").mkdir(parents=True)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: rastro\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log = open(self.dir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.config}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._ready, timeout=60, interval=0.2, what="Prometheus to be ready")
        except TimeoutError:
            self.stop()
            raise

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("prometheus exited: " + (self.dir / "prometheus.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                        timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr):
        """Instant query: [(labels, value)]."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        res = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [({}, float(res[1]))]
        return [(item["metric"], float(item["value"][1])) for item in res]

    def value(self, expr):
        """The single value of expr, or None when the result is empty."""
        res = self.query(expr)
        assert len(res) <= 1, (expr, res)
        return res[0][1] if res else None

    def wait_value(self, expr, want, timeout=30):
        """Polls until expr == want (scrapes come every second); returns the
        last value so the caller's assertion shows what was there."""
        deadline = time.time() + timeout
        while True:
            v = self.value(expr)
            if v == want or time.time() > deadline:
                return v
            time.sleep(0.25)

    def wait_scrapes(self, n=2):
        """Waits for n more successful scrapes of rastro."""
        def count():
            return self.value('sum(count_over_time(up{job="rastro"}[10m]))') or 0
        start = count()
        wait_for(lambda: count() >= start + n, timeout=30, interval=0.25,
                 what=f"{n} more scrapes")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    """prometheus(target) -> a started Prometheus scraping target every second."""
    started = []

    def make(target):
        p = Prometheus(tmp_path, target)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def start_rastro(rastro, app, extra="", env=None, printer="json"):
    prom_port = free_port()
    r = rastro(config_for_ports(app.port, name="svc", namespace="test", extra=extra),
               env={"RASTRO_PROMETHEUS_PORT": str(prom_port), **(env or {})}, printer=printer)
    r.wait_traced(app.pid)
    wait_port(prom_port)
    return r, prom_port


def server_records(r, port):
    return r.snapshot(lambda x: x["kind"] == "SERVER" and x["server.port"] == port)


SVC = 'service_name="svc"'
COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"


# ---- the known mix, heuristic routes

def test_red_metrics_exact_counts(rastro, perl_app, prometheus):
    r, prom_port = start_rastro(rastro, perl_app)
    prom = prometheus(f"127.0.0.1:{prom_port}")
    assert prom.wait_value('up{job="rastro"}', 1.0) == 1.0

    mix = ([("GET", "/")] * 5 + [("GET", "/products")] * 3 + [("GET", "/status/404")] * 4
           + [("GET", "/status/201")] * 2 + [("GET", "/fail")] * 3 + [("GET", "/slow")] * 2
           + [("GET", "/users/1"), ("GET", "/users/22"), ("GET", "/users/333")]
           + [("POST", "/products")])
    statuses = [get(perl_app.port, path, method)[0] for method, path in mix]
    assert statuses == [200] * 5 + [200] * 3 + [404] * 4 + [201] * 2 + [500] * 3 + [200] * 2 \
        + [200] * 3 + [404]
    total = len(mix)
    r.wait_records(total, lambda x: x["server.port"] == perl_app.port)

    assert prom.wait_value(f"sum({COUNT}{{{SVC}}})", total) == total
    expected = {
        ("GET", "/", "200"): 5,
        ("GET", "/products", "200"): 3,
        ("GET", "/status/*", "404"): 4,
        ("GET", "/status/*", "201"): 2,
        ("GET", "/fail", "500"): 3,
        ("GET", "/slow", "200"): 2,
        ("GET", "/users/*", "200"): 3,
        ("POST", "/products", "404"): 1,
    }
    got = {(m["http_request_method"], m["http_route"], m["http_response_status_code"]): v
           for m, v in prom.query(f"sum by (http_request_method, http_route, "
                                  f"http_response_status_code) ({COUNT}{{{SVC}}})")}
    assert got == expected
    assert prom.value(f'sum({COUNT}{{{SVC},http_response_status_code="404"}})') == 5
    # error.type only on 5xx
    assert prom.query(f'sum by (error_type) ({COUNT}{{{SVC},error_type!=""}})') == \
        [({"error_type": "500"}, 3.0)]
    # every series has the service labels and Prometheus' own job/instance,
    # never exported_* (which would mean rastro sent job or instance itself)
    series = prom.query(f"{COUNT}{{{SVC}}}")
    assert len(series) == len(expected)
    for labels, _ in series:
        assert labels["service_namespace"] == "test"
        assert labels["job"] == "rastro"
        assert labels["instance"] == f"127.0.0.1:{prom_port}"
        assert labels["url_scheme"] == "http"
        assert labels["server_port"] == str(perl_app.port)
        assert not any(k.startswith("exported_") for k in labels), labels

    # /slow sleeps 200 ms: every observation in (0.1, 0.25]
    assert prom.value(f'sum({BUCKET}{{{SVC},http_route="/slow",le="0.1"}})') == 0
    assert prom.value(f'sum({BUCKET}{{{SVC},http_route="/slow",le="0.25"}})') == 2
    q = prom.value(f'histogram_quantile(0.5, sum by (le) ({BUCKET}{{{SVC},http_route="/slow"}}))')
    assert 0.1 < q <= 0.25, q
    # the fast routes are under 100 ms
    assert prom.value(f'sum({BUCKET}{{{SVC},http_route="/",le="0.1"}})') == 5

    # body sizes, in bytes
    assert prom.value(f'sum(http_server_response_body_size_bytes_sum{{{SVC},http_route="/"}})') \
        == 5 * len(HELLO)
    assert prom.value(
        f'sum(http_server_response_body_size_bytes_count{{{SVC},http_route="/"}})') == 5
    assert prom.value(
        f'sum(http_server_request_body_size_bytes_sum{{{SVC},http_route="/"}})') == 0

    # target_info carries the resource
    info = prom.query(f"target_info{{{SVC}}}")
    assert len(info) == 1
    labels = info[0][0]
    assert labels["service_namespace"] == "test"
    assert labels["telemetry_sdk_name"] == "rastro"
    assert labels["telemetry_sdk_language"] == "perl"
    assert labels["process_pid"] == str(perl_app.pid)
    assert labels["service_instance_id"]

    # self-metrics
    assert prom.value('rastro_instrumented_processes{job="rastro"}') == 1
    assert prom.value('rastro_metric_series{metric="http.server.request.duration"}') == \
        len(expected)
    assert prom.value('sum(rastro_events_lost_total{source="kernel"})') == 0

    # nothing counted twice: the totals hold over later scrapes
    prom.wait_scrapes(2)
    assert prom.value(f"sum({COUNT}{{{SVC}}})") == total
    assert prom.value(f'sum({COUNT}{{{SVC},http_route="/slow"}})') == 2


# ---- routes section

def test_route_patterns_and_ignored(rastro, perl_app, prometheus):
    extra = ("routes:\n"
             "  patterns:\n"
             "    - /users/{id}\n"
             "    - /status/:code\n"
             "  ignored_patterns:\n"
             "    - /products\n"
             "  unmatched: path\n")
    r, prom_port = start_rastro(rastro, perl_app, extra=extra)
    prom = prometheus(f"127.0.0.1:{prom_port}")
    for path in ["/users/1", "/users/abc", "/status/404", "/products", "/products",
                 "/products", "/fail", "/slow"]:
        get(perl_app.port, path)
    r.wait_records(5, lambda x: x["server.port"] == perl_app.port)
    assert prom.wait_value(f"sum({COUNT}{{{SVC}}})", 5) == 5
    got = {m["http_route"]: v
           for m, v in prom.query(f"sum by (http_route) ({COUNT}{{{SVC}}})")}
    assert got == {"/users/{id}": 2, "/status/:code": 1, "/fail": 1, "/slow": 1}
    assert prom.value("rastro_requests_ignored_total") == 3
    # ignored requests are not reported at all: no span record either
    prom.wait_scrapes(1)
    recs = server_records(r, perl_app.port)
    assert sorted(x["url.path"] for x in recs) == sorted(
        ["/users/1", "/users/abc", "/status/404", "/fail", "/slow"])
    assert {x["http.route"] for x in recs} == {"/users/{id}", "/status/:code", "/fail", "/slow"}


# ---- cardinality guard

def test_overflow_series(rastro, perl_app, prometheus):
    r, prom_port = start_rastro(rastro, perl_app, extra="routes:\n  unmatched: path\n",
                                env={"RASTRO_MAX_SERIES": "3"})
    prom = prometheus(f"127.0.0.1:{prom_port}")
    for path in ["/users/a", "/users/b", "/users/c", "/users/d", "/users/e", "/users/a",
                 "/users/f"]:
        assert get(perl_app.port, path)[0] == 200
    r.wait_records(7, lambda x: x["server.port"] == perl_app.port)
    assert prom.wait_value(f"sum({COUNT}{{{SVC}}})", 7) == 7
    got = {m.get("http_route", "") + "|" + m.get("otel_metric_overflow", ""): v
           for m, v in prom.query(f"{COUNT}{{{SVC}}}")}
    assert got == {"/users/a|": 2, "/users/b|": 1, "/users/c|": 1, "|true": 3}
    overflow = prom.query(f'{COUNT}{{{SVC},otel_metric_overflow="true"}}')[0][0]
    # the overflow series has no other attribute
    assert set(overflow) == {"__name__", "service_name", "service_namespace",
                             "otel_metric_overflow", "job", "instance"}
    assert prom.value('rastro_metric_overflow_total{metric="http.server.request.duration"}') == 3
    assert prom.value('rastro_metric_series{metric="http.server.request.duration"}') == 3


# ---- the exposition itself

def count_total(body):
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode("utf-8").splitlines()
               if line.startswith(COUNT + "{"))


def test_exposition_and_promtool(rastro, perl_app):
    # no trace printer: its line for the non-UTF-8 path would not decode here
    r, prom_port = start_rastro(rastro, perl_app, extra="routes:\n  unmatched: path\n",
                                printer="disabled")
    get(perl_app.port, "/")
    get(perl_app.port, "/status/503")
    # paths that need escaping or are not UTF-8 (Mojolicious answers 404)
    assert raw_get(perl_app.port, b'/a"b\\c') == 404
    assert raw_get(perl_app.port, b"/x\xff\xfe/%00") == 404
    wait_for(lambda: count_total(scrape(prom_port)[2]) == 4, timeout=10,
             what="4 requests on the endpoint")

    status, ctype, body = scrape(prom_port)
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode("utf-8")  # valid UTF-8 whatever the paths were
    assert 'http_route="/a\\"b\\\\c"' in text
    assert 'http_route="/x\ufffd\ufffd/%00"' in text
    assert 'error_type="503"' in text
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b"")

    assert scrape(prom_port, method="HEAD")[0] == 200
    assert scrape(prom_port, "/")[0] == 404
    assert scrape(prom_port, "/metricsx")[0] == 404
    assert scrape(prom_port, method="POST")[0] == 405


# ---- endpoint options

def test_custom_path(rastro, perl_app):
    """prometheus_export.path moves the endpoint: 200 there, 404 at /metrics."""
    r, prom_port = start_rastro(rastro, perl_app, extra="prometheus_export: {path: /custom}\n")
    assert get(perl_app.port, "/")[0] == 200
    r.wait_records(1, lambda x: x["server.port"] == perl_app.port)
    wait_for(lambda: count_total(scrape(prom_port, "/custom")[2]) == 1, timeout=10,
             what="1 request on /custom")
    status, ctype, body = scrape(prom_port, "/custom")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert "rastro_payloads_truncated_total" in body.decode()
    assert scrape(prom_port, "/metrics")[0] == 404
    assert scrape(prom_port, "/")[0] == 404


def test_beyla_prometheus_port_from_environment(tmp_path, perl_app):
    """BEYLA_PROMETHEUS_PORT alone (no RASTRO_ variable, no YAML) opens the
    endpoint on that port."""
    port = free_port()
    r = Rastro(tmp_path, config_for_ports(perl_app.port), env={"BEYLA_PROMETHEUS_PORT": str(port)})
    del r.env["RASTRO_PROMETHEUS_PORT"]  # the fixture's 0
    try:
        r.start()
        r.wait_traced(perl_app.pid)
        wait_port(port)
        assert get(perl_app.port, "/")[0] == 200
        assert get(perl_app.port, "/fail")[0] == 500
        r.wait_records(2, lambda x: x["server.port"] == perl_app.port)
        wait_for(lambda: count_total(scrape(port)[2]) == 2, timeout=10,
                 what="2 requests on the endpoint")
        status, _, body = scrape(port)
        assert status == 200
        lines = [x for x in body.decode().splitlines() if x.startswith(COUNT + "{")]
        assert len(lines) == 2 and all(SVC in x for x in lines), lines
        assert "cannot listen" not in r.stderr()
    finally:
        r.stop()


# ---- port rules

def test_explicit_port_in_use_fails(tmp_path, perl_app):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = Rastro(tmp_path, config_for_ports(perl_app.port),
                   env={"RASTRO_PROMETHEUS_PORT": str(port)})
        r.start(wait_started=False)
        try:
            rc = r.proc.wait(30)
        finally:
            r.stop()
    assert rc != 0
    errors = [line for line in r.stderr().splitlines() if "ERROR" in line]
    assert len(errors) == 1, r.stderr()
    assert errors[0].endswith(
        f"prometheus_export.port: cannot listen on 127.0.0.1:{port}: the port is already in use")
    assert "started" not in r.stderr()


def test_default_port_in_use_warns(tmp_path, perl_app):
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 9400))
        busy.listen()
    except OSError:
        busy.close()
        busy = None  # already taken by someone else: the same situation
    try:
        r = Rastro(tmp_path, config_for_ports(perl_app.port))
        del r.env["RASTRO_PROMETHEUS_PORT"]  # the fixture's 0: leave the default
        r.start()
        r.wait_traced(perl_app.pid)
        assert r.proc.poll() is None
        assert "cannot listen on 127.0.0.1:9400 (the default prometheus_export.port)" in \
            r.stderr()
        assert get(perl_app.port, "/")[0] == 200
        r.wait_records(1, lambda x: x["server.port"] == perl_app.port)
        r.stop()
    finally:
        if busy:
            busy.close()


# ---- OTLP metrics

def metric_points(requests, name):
    """[(resource attrs, point)] of metric `name` in decoded requests."""
    out = []
    for req in requests:
        for rm in req.get("resourceMetrics", []):
            res = attrs(rm.get("resource", {}).get("attributes"))
            for sm in rm.get("scopeMetrics", []):
                for m in sm.get("metrics", []):
                    if m["name"] == name:
                        out.append((res, m, sm.get("scope", {})))
    return out


def test_otlp_metrics_export(rastro, perl_app, otlp_receiver):
    r, prom_port = start_rastro(rastro, perl_app, env={
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": otlp_receiver.metrics_url,
        "OTEL_METRIC_EXPORT_INTERVAL": "500"})
    for path in ["/", "/", "/fail", "/slow"]:
        get(perl_app.port, path)
    r.wait_records(4, lambda x: x["server.port"] == perl_app.port)

    def latest():
        pts = metric_points(otlp_receiver.metrics(), "http.server.request.duration")
        pts = [p for p in pts if p[0].get("service.name") == "svc"]
        return pts[-1] if pts else None

    def total(p):
        return sum(int(dp["count"]) for dp in p[1]["histogram"]["dataPoints"]) if p else 0

    wait_for(lambda: total(latest()) == 4, timeout=20, what="4 requests in an OTLP export")
    res, metric, scope = latest()
    assert res["service.namespace"] == "test"
    assert res["telemetry.sdk.name"] == "rastro"
    assert res["process.pid"] == perl_app.pid
    assert scope["name"] == "rastro"
    assert metric["unit"] == "s"
    hist = metric["histogram"]
    assert hist["aggregationTemporality"] == "AGGREGATION_TEMPORALITY_CUMULATIVE"
    by_route = {attrs(dp["attributes"])["http.route"]: dp for dp in hist["dataPoints"]}
    assert set(by_route) == {"/", "/fail", "/slow"}
    slow = by_route["/slow"]
    assert attrs(slow["attributes"]) == {
        "http.request.method": "GET", "http.response.status_code": 200, "http.route": "/slow",
        "url.scheme": "http", "server.port": perl_app.port}
    assert slow["explicitBounds"] == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                                      1, 2.5, 5, 7.5, 10]
    assert [int(c) for c in slow["bucketCounts"]] == [0] * 6 + [1] + [0] * 8
    assert 0.2 <= slow["sum"] <= 0.25
    assert int(slow["count"]) == 1
    assert int(slow["startTimeUnixNano"]) < int(slow["timeUnixNano"])
    assert attrs(by_route["/fail"]["attributes"])["error.type"] == "500"
    assert int(by_route["/"]["count"]) == 2
    sizes = metric_points([otlp_receiver.metrics()[-1]], "http.server.response.body.size")
    assert sizes and sizes[0][1]["unit"] == "By"
    size_pts = {attrs(dp["attributes"])["http.route"]: dp
                for dp in sizes[0][1]["histogram"]["dataPoints"]}
    assert size_pts["/"]["sum"] == 2 * len(HELLO)
    # rastro's own metrics, with their own resource
    own = metric_points([otlp_receiver.metrics()[-1]], "rastro_requests")
    assert own and own[0][0]["service.name"] == "rastro"
    assert own[0][1]["sum"]["isMonotonic"] is True
    # the Prometheus endpoint shows the same export attempts
    _, _, body = scrape(prom_port)
    assert 'rastro_export_requests_total{signal="metrics"}' in body.decode()

    # the last export happens at shutdown, with what came since
    get(perl_app.port, "/products")
    r.wait_records(5, lambda x: x["server.port"] == perl_app.port)
    n = len(otlp_receiver.metrics())
    assert r.stop() == 0
    final = otlp_receiver.metrics()
    assert len(final) > n
    assert total([p for p in metric_points(final[-1:], "http.server.request.duration")
                  if p[0].get("service.name") == "svc"][-1]) == 5


def test_endpoint_answers_while_otlp_backend_hangs(rastro, perl_app, otlp_receiver):
    # every metrics export waits 20 s for an answer, longer than the timeout
    otlp_receiver.script(default={"status": 200, "delay_ms": 20000, "signal": "metrics"})
    r, prom_port = start_rastro(rastro, perl_app, env={
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": otlp_receiver.metrics_url,
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "3000",
        "OTEL_METRIC_EXPORT_INTERVAL": "200"})
    wait_for(lambda: otlp_receiver.requests("metrics"), timeout=10,
             what="a first metrics export to be in flight")
    deadline = time.time() + 8
    served = 0
    while time.time() < deadline:
        get(perl_app.port, "/")
        t0 = time.time()
        status, _, body = scrape(prom_port)
        assert status == 200
        assert time.time() - t0 < 1.0, "the scrape waited for the OTLP export"
        served += 1
        time.sleep(0.2)
    r.wait_records(served, lambda x: x["server.port"] == perl_app.port)
    text = scrape(prom_port)[2].decode()
    line = [x for x in text.splitlines() if x.startswith(f"{COUNT}{{") and 'http_route="/"' in x]
    assert line and line[0].endswith(f" {served}"), line
    # the timed-out exports are counted
    def failures():
        text = scrape(prom_port)[2].decode()
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                   if x.startswith('rastro_export_failures_total{signal="metrics"'))
    wait_for(lambda: failures() > 0, timeout=15, what="a counted export failure")
