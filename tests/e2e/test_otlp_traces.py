"""OTLP/HTTP span export against a real receiver that decodes rastro's
requests with the official OpenTelemetry generated code (otlp/receiver.js),
with the seed's Perl/Mojolicious app as the traced service. Spans are compared
with what the JSON trace printer prints for the same requests; exporter faults
(503, 400, 429 + Retry-After, a slow or stopped backend, garbage and partial
success answers) are scripted in the receiver."""
import re
import signal
import time
import urllib.request

import pytest

from conftest import RSS_SLACK, config_for_ports, free_port, needs_root, wait_for, wait_port
from otlp_fixtures import attrs, otlp_receiver, rss_kib  # noqa: F401  (fixture)
from test_reliability_helpers import metric, self_metrics

pytestmark = needs_root

VERSION = "0.1.0"
# Keys of a JSON printer record that are not span attributes.
NOT_ATTRS = {"service.name", "service.namespace", "service.instance.id", "process.pid",
             "thread.id", "status.code", "status.message"}


def get(port, path, method="GET", data=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def config(port, extra=""):
    """The Perl app as perlapp/poc, OTLP span export with a short batch delay."""
    return config_for_ports(port, name="perlapp", namespace="poc", extra=(
        "otel_traces_export:\n"
        "  schedule_delay: 200ms\n" + extra))


def start(rastro, perl_app, receiver, extra="", env=None):
    e = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_url}
    e.update(env or {})
    r = rastro(config(perl_app.port, extra), env=e)
    r.wait_traced(perl_app.pid)
    assert f"OTLP traces export to {receiver.traces_url}" in r.stderr()
    return r


def printed(r, port):
    return r.snapshot(lambda x: x["kind"] == "SERVER" and x["server.port"] == port)


def stats_line(r, signal_name="traces"):
    """The exporter's counters, from the line rastro logs at exit."""
    m = re.search(signal_name + r" export: (requests_sent=.*)", r.stderr())
    assert m, r.stderr()
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def with_prometheus():
    """(env, port): rastro's Prometheus endpoint on a free port."""
    port = free_port()
    return {"RASTRO_PROMETHEUS_PORT": str(port)}, port


def settled_self_metrics(prom):
    """rastro's self-metrics once nothing waits for a batch or in the
    traces client's queue: the counters are final then."""
    def idle():
        s = self_metrics(prom)
        return s if (metric(s, "rastro_spans_queued") == 0
                     and metric(s, "rastro_export_queue_requests", signal="traces") == 0) else None
    return wait_for(idle, timeout=15, what="the span queues to drain")


def span_export_line(r):
    m = re.search(r"span export: spans handed to the client=(\d+) dropped_queue_full=(\d+)",
                  r.stderr())
    assert m, r.stderr()
    return int(m.group(1)), int(m.group(2))


def check_span_matches_record(span, rec):
    """A span says exactly what the JSON printer said about the same request."""
    assert span["traceId"] == rec["trace_id"]
    assert span["spanId"] == rec["span_id"]
    assert span.get("parentSpanId", "") == rec["parent_span_id"]
    assert span["name"] == rec["name"]
    assert span["kind"] == "SPAN_KIND_" + rec["kind"]
    assert int(span["startTimeUnixNano"]) == rec["start_time_unix_nano"]
    assert int(span["endTimeUnixNano"]) == rec["end_time_unix_nano"]
    assert span["flags"] & 0xFF == 1  # W3C sampled
    want = {k: v for k, v in rec.items() if "." in k and k not in NOT_ATTRS}
    assert attrs(span.get("attributes")) == want
    if "status.code" in rec:  # printed for failed spans only
        assert span["status"] == {"code": "STATUS_CODE_" + rec["status.code"],
                                  "message": rec["status.message"]}
    else:
        assert "status" not in span
    res = span["_resource"]
    assert res["service.name"] == rec["service.name"]
    assert res["service.namespace"] == rec["service.namespace"]
    assert res["service.instance.id"] == rec["service.instance.id"]
    assert res["process.pid"] == rec["process.pid"]
    assert span["_scope"] == {"name": "rastro", "version": VERSION}


def test_spans_match_printer_and_conventions(rastro, perl_app, otlp_receiver):
    r = start(rastro, perl_app, otlp_receiver, env={
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e%20test,team=a%2Cb"})
    port = perl_app.port
    assert get(port, "/") == 200
    assert get(port, "/products?q=pen&page=2") == 200
    assert get(port, "/status/404") == 404
    assert get(port, "/fail") == 500
    assert get(port, "/echo", method="POST", data=b"hello") == 200
    recs = r.wait_records(5, lambda x: x["server.port"] == port)
    spans = otlp_receiver.wait_spans(5)
    time.sleep(0.6)  # three batch delays: nothing more may come
    spans = otlp_receiver.spans()
    assert len(spans) == 5
    assert len({s["spanId"] for s in spans}) == 5
    by_id = {s["spanId"]: s for s in spans}
    for rec in recs:
        check_span_matches_record(by_id[rec["span_id"]], rec)

    # The values themselves, not only agreement with the printer.
    got = [by_id[rec["span_id"]] for rec in recs]
    a = [attrs(s["attributes"]) for s in got]
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"])
            for x in a] == [("GET", "/", 200), ("GET", "/products", 200),
                            ("GET", "/status/404", 404), ("GET", "/fail", 500),
                            ("POST", "/echo", 200)]
    for s, x in zip(got, a):
        route = x.get("http.route")
        assert s["name"] == (f'{x["http.request.method"]} {route}' if route
                             else x["http.request.method"])
        assert s["kind"] == "SPAN_KIND_SERVER"
        assert x["server.port"] == port
        assert x["client.address"] == "127.0.0.1"
        assert 0 < x["client.port"] < 65536
        assert x["url.scheme"] == "http"
        assert x["network.protocol.version"] == "1.1"
        assert x["user_agent.original"].startswith("Python-urllib/")
        assert "parentSpanId" not in s  # no incoming traceparent
        assert int(s["endTimeUnixNano"]) > int(s["startTimeUnixNano"])
        assert abs(int(s["startTimeUnixNano"]) / 1e9 - time.time()) < 60
    assert a[1]["url.query"] == "q=?&page=?"
    assert a[4]["http.request.body.size"] == 5
    # status: 5xx is an error on a server span, 4xx is not
    assert got[3]["status"] == {"code": "STATUS_CODE_ERROR", "message": "500"}
    assert a[3]["error.type"] == "500"
    for i in (0, 1, 2, 4):
        assert "status" not in got[i], got[i]

    res = got[0]["_resource"]
    assert res["service.name"] == "perlapp"
    assert res["service.namespace"] == "poc"
    assert res["service.instance.id"]
    assert res["telemetry.sdk.name"] == "rastro"
    assert res["telemetry.sdk.language"] == "perl"
    assert res["telemetry.sdk.version"] == VERSION
    assert res["process.pid"] == perl_app.pid
    assert res["deployment.environment"] == "e2e test"
    assert res["team"] == "a,b"

    reqs = otlp_receiver.requests("traces")
    for q in reqs:
        assert q["headers"]["content-type"] == "application/x-protobuf"
        assert q["headers"]["user-agent"] == f"rastro/{VERSION}"
        assert "content-encoding" not in q["headers"]
        assert q["status"] == 200
    # one service: one resource per request
    assert all(len(q["request"]["resourceSpans"]) == 1 for q in reqs)


def test_traceparent_ids_and_batching(rastro, perl_app, otlp_receiver):
    """A traceparent's trace id and parent reach OTLP; 7 spans with batches of
    3 go out as 3 + 3 + 1."""
    r = start(rastro, perl_app, otlp_receiver, extra="  max_export_batch_size: 3\n")
    port = perl_app.port
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert get(port, "/", headers={"traceparent": tp, "tracestate": "congo=t61rcWkgMzE"}) == 200
    for i in range(6):
        assert get(port, f"/users/{i}") == 200
    recs = r.wait_records(7, lambda x: x["server.port"] == port)
    spans = otlp_receiver.wait_spans(7)
    time.sleep(0.6)
    assert len(otlp_receiver.spans()) == 7
    first = next(s for s in spans if s["spanId"] == recs[0]["span_id"])
    assert first["traceId"] == "0af7651916cd43dd8448eb211c80319c" == recs[0]["trace_id"]
    assert first["parentSpanId"] == "b7ad6b7169203331" == recs[0]["parent_span_id"]
    assert first["traceState"] == "congo=t61rcWkgMzE"
    assert first["flags"] == 0x301  # sampled; its parent (the header's) is remote
    assert {s["flags"] for s in spans if s is not first} == {0x101}  # roots
    for rec in recs:
        check_span_matches_record(next(s for s in spans if s["spanId"] == rec["span_id"]), rec)
    sizes = sorted(len(q["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"])
                   for q in otlp_receiver.requests("traces"))
    assert sizes == [1, 3, 3]


def test_gzip_headers_and_base_endpoint(rastro, perl_app, otlp_receiver):
    """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL (v1/traces appended); gzip and
    configured headers are sent."""
    r = rastro(config(perl_app.port), env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint + "/",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cr%20t,X-Tenant=t1"})
    r.wait_traced(perl_app.pid)
    for path in ("/", "/products", "/fail"):
        get(perl_app.port, path)
    recs = r.wait_records(3, lambda x: x["server.port"] == perl_app.port)
    spans = otlp_receiver.wait_spans(3)
    reqs = otlp_receiver.requests("traces")
    assert {q["path"] for q in reqs} == {"/v1/traces"}
    for q in reqs:
        assert q["headers"]["content-encoding"] == "gzip"
        assert q["headers"]["x-api-key"] == "s3cr t"
        assert q["headers"]["x-tenant"] == "t1"
        assert q["decode_error"] is None
    assert sorted(s["spanId"] for s in spans) == sorted(x["span_id"] for x in recs)
    # The base URL also enables the metrics client, whose last export is
    # flushed at exit with the same compression and headers.
    assert "OTLP metrics export to " + otlp_receiver.metrics_url in r.stderr()
    r.stop()
    metrics = otlp_receiver.requests("metrics")
    assert metrics and all(q["path"] == "/v1/metrics" for q in metrics)
    for q in metrics:
        assert q["headers"]["content-encoding"] == "gzip"
        assert q["headers"]["x-api-key"] == "s3cr t"
        assert q["headers"]["user-agent"] == f"rastro/{VERSION}"
        assert q["decode_error"] is None and q["status"] == 200
    assert stats_line(r, "metrics")["unsent"] == 0


def test_503_twice_then_200_every_span_once(rastro, perl_app, otlp_receiver):
    otlp_receiver.script({"status": 503, "times": 2, "signal": "traces"})
    r = start(rastro, perl_app, otlp_receiver)
    for i in range(4):
        assert get(perl_app.port, f"/users/{i}") == 200
    recs = r.wait_records(4, lambda x: x["server.port"] == perl_app.port)
    spans = otlp_receiver.wait_spans(4, timeout=20)
    time.sleep(1.0)
    spans = otlp_receiver.spans()
    assert sorted(s["spanId"] for s in spans) == sorted(x["span_id"] for x in recs)
    reqs = otlp_receiver.requests("traces")
    assert [q["status"] for q in reqs] == [503, 503, 200]
    # the same request body each time, after a backoff of at least 0.5 s
    assert reqs[0]["request"] == reqs[1]["request"] == reqs[2]["request"]
    assert reqs[1]["time_ms"] - reqs[0]["time_ms"] >= 450
    assert reqs[2]["time_ms"] - reqs[1]["time_ms"] >= 950
    assert r.stderr().count("HTTP 503; retrying") == 1
    r.stop()
    st = stats_line(r)
    assert (st["requests_sent"], st["requests_ok"], st["retryable_failures"],
            st["retries"]) == (3, 1, 2, 2)
    assert (st["items_ok"], st["items_dropped"], st["unsent"]) == (4, 0, 0)


def test_400_dropped_counted_logged_once(rastro, perl_app, otlp_receiver):
    otlp_receiver.script({"status": 400, "times": 3, "body": "text",
                          "message": "bad trace data", "signal": "traces"})
    env, prom = with_prometheus()
    r = start(rastro, perl_app, otlp_receiver, env=env)
    wait_port(prom)
    for i in range(3):  # three batches, three 400s
        assert get(perl_app.port, f"/users/{i}") == 200
        wait_for(lambda: len(otlp_receiver.requests("traces")) == i + 1, timeout=10,
                 what="one export request")
    assert get(perl_app.port, "/products") == 200  # then the backend accepts again
    spans = otlp_receiver.wait_spans(1)
    time.sleep(0.6)
    assert [q["status"] for q in otlp_receiver.requests("traces")] == [400, 400, 400, 200]
    assert len(otlp_receiver.spans()) == 1
    assert attrs(spans[0]["attributes"])["url.path"] == "/products"
    lines = [ln for ln in r.stderr().splitlines() if "HTTP 400" in ln]
    assert len(lines) == 1, lines
    assert '"bad trace data"' in lines[0] and "1 spans dropped" in lines[0]
    sm = settled_self_metrics(prom)
    r.stop()
    st = stats_line(r)
    assert (st["requests_sent"], st["requests_ok"], st["permanent_failures"],
            st["retries"]) == (4, 1, 3, 0)
    assert (st["items_ok"], st["items_dropped"], st["items_rejected"]) == (1, 3, 0)
    # The self-metrics say the same while rastro runs: a 400 is a permanent
    # failure whose spans are dropped; it is not a request given up for a full
    # queue or for retrying too long, and no span was dropped before the client.
    assert metric(sm, "rastro_export_requests_total", signal="traces") == 4
    assert metric(sm, "rastro_export_failures_total", signal="traces", cause="permanent") == 3
    assert metric(sm, "rastro_export_failures_total", signal="traces", cause="retryable") == 0
    assert metric(sm, "rastro_export_retries_total", signal="traces") == 0
    assert metric(sm, "rastro_export_dropped_items_total", signal="traces") == st["items_dropped"]
    assert metric(sm, "rastro_export_dropped_requests_total", signal="traces") == 0
    assert metric(sm, "rastro_export_rejected_items_total", signal="traces") == 0
    assert metric(sm, "rastro_spans_dropped_total", cause="queue_full") == 0
    assert metric(sm, "rastro_spans_exported_total") == 4
    assert ("rastro_spans_dropped_total", frozenset({("cause", "queue_full")})) in sm


def test_retry_after_honoured(rastro, perl_app, otlp_receiver):
    """Retry-After: 2 delays the retry by 2 s (the backoff alone: 0.5-1 s)."""
    otlp_receiver.script({"status": 429, "retry_after": "2", "signal": "traces"})
    r = start(rastro, perl_app, otlp_receiver)
    assert get(perl_app.port, "/") == 200
    otlp_receiver.wait_spans(1, timeout=10)
    reqs = otlp_receiver.requests("traces")
    assert [q["status"] for q in reqs] == [429, 200]
    gap = reqs[1]["time_ms"] - reqs[0]["time_ms"]
    assert 1950 <= gap <= 3000, gap
    assert r.stderr().count("HTTP 429; retrying with backoff, honouring Retry-After") == 1


def test_partial_success_and_garbage_answers(rastro, perl_app, otlp_receiver):
    otlp_receiver.script(
        {"body": "partial", "rejected": 1, "message": "span too old", "times": 2,
         "signal": "traces"},
        {"body": "garbage", "signal": "traces"})
    r = start(rastro, perl_app, otlp_receiver)
    for i in range(4):
        assert get(perl_app.port, f"/users/{i}") == 200
        wait_for(lambda: len(otlp_receiver.requests("traces")) == i + 1, timeout=10,
                 what="one export request")
    assert [q["status"] for q in otlp_receiver.requests("traces")] == [200] * 4
    err = r.stderr()
    assert err.count('the backend rejected 1 of 1 spans: "span too old"') == 1
    assert err.count("not an OTLP ExportTraceServiceResponse") == 1
    r.stop()
    st = stats_line(r)
    assert (st["requests_sent"], st["requests_ok"], st["items_rejected"],
            st["items_dropped"]) == (4, 4, 2, 0)


def test_backend_down_30s_bounded_then_recovers(rastro, perl_app, otlp_receiver):
    """Backend down for 30 s under load: one warning, spans beyond the queue
    dropped and counted, RSS bounded; then every queued span arrives."""
    otlp_receiver.stop()
    env, prom = with_prometheus()
    r = start(rastro, perl_app, otlp_receiver,
              extra="  max_queue_size: 300\n  max_export_batch_size: 100\n", env=env)
    wait_port(prom)
    port = perl_app.port
    assert get(port, "/") == 200
    r.wait_records(1, lambda x: x["server.port"] == port)
    time.sleep(1)
    rss0 = rss_kib(r.proc.pid)
    sent = 1
    t0 = time.time()
    rss_max = rss0
    while time.time() - t0 < 30:
        for _ in range(20):
            assert get(port, "/products") == 200
            sent += 1
        rss_max = max(rss_max, rss_kib(r.proc.pid))
        time.sleep(0.1)
    recs = r.wait_records(sent, lambda x: x["server.port"] == port)
    assert sent > 600  # far more than the queue holds
    assert rss_max - rss0 < 4096 * RSS_SLACK, (rss0, rss_max)
    refused = [ln for ln in r.stderr().splitlines() if "traces export to" in ln
               and "failed" in ln]
    assert len(refused) == 1, refused

    otlp_receiver.start()
    wait_for(lambda: "works again" in r.stderr(), timeout=15, what="the export to recover")
    assert get(port, "/status/201") == 201  # and new spans flow
    spans = otlp_receiver.wait_spans(
        1, pred=lambda s: attrs(s["attributes"]).get("url.path") == "/status/201", timeout=10)
    time.sleep(0.6)
    spans = otlp_receiver.spans()
    ids = [s["spanId"] for s in spans]
    assert len(ids) == len(set(ids))  # nothing twice
    assert set(ids) <= {x["span_id"] for x in r.snapshot(lambda x: x["server.port"] == port)}
    sm = settled_self_metrics(prom)
    r.stop()
    handed, dropped_queue = span_export_line(r)
    st = stats_line(r)
    # The self-metrics, read while rastro ran, count the same drops as the
    # lines it logs at exit.
    assert dropped_queue > 0
    assert metric(sm, "rastro_spans_dropped_total", cause="queue_full") == dropped_queue
    assert metric(sm, "rastro_spans_exported_total") == handed
    assert metric(sm, "rastro_export_dropped_items_total", signal="traces") == st["items_dropped"]
    assert metric(sm, "rastro_export_dropped_requests_total", signal="traces",
                  cause="queue_full") == st["dropped_queue_full"]
    assert metric(sm, "rastro_export_dropped_requests_total", signal="traces",
                  cause="expired") == st["expired"]
    assert metric(sm, "rastro_export_requests_total", signal="traces") == st["requests_sent"]
    assert (metric(sm, "rastro_export_failures_total", signal="traces", cause="retryable")
            == st["retryable_failures"])
    assert metric(sm, "rastro_export_retries_total", signal="traces") == st["retries"]
    # every span is accounted for: exported, or dropped and counted
    assert handed + dropped_queue == sent + 1
    assert st["unsent"] == 0
    assert len(spans) == handed - st["items_dropped"] == st["items_ok"]
    assert 300 <= len(spans) <= 500
    assert len(recs) == sent


def test_sigterm_flushes_within_5s(rastro, perl_app, otlp_receiver):
    r = start(rastro, perl_app, otlp_receiver, extra="  schedule_delay: 60s\n")
    for i in range(5):
        assert get(perl_app.port, f"/users/{i}") == 200
    recs = r.wait_records(5, lambda x: x["server.port"] == perl_app.port)
    time.sleep(0.5)
    assert otlp_receiver.spans() == []  # waiting for the 60 s batch delay
    t0 = time.time()
    r.proc.send_signal(signal.SIGTERM)
    r.proc.wait(10)
    assert time.time() - t0 < 5
    spans = otlp_receiver.spans()
    assert sorted(s["spanId"] for s in spans) == sorted(x["span_id"] for x in recs)


@pytest.mark.parametrize("fault", ["down", "slow"])
def test_sigterm_gives_up_within_5s(rastro, perl_app, otlp_receiver, fault):
    """A stopped or hanging backend does not hold the shutdown beyond 5 s."""
    r = start(rastro, perl_app, otlp_receiver, extra="  schedule_delay: 60s\n")
    for i in range(3):
        assert get(perl_app.port, f"/users/{i}") == 200
    r.wait_records(3, lambda x: x["server.port"] == perl_app.port)
    if fault == "down":
        otlp_receiver.stop()
    else:
        otlp_receiver.script(default={"status": 200, "delay_ms": 20000})
    t0 = time.time()
    r.proc.send_signal(signal.SIGTERM)
    r.proc.wait(10)
    assert time.time() - t0 < 5
    r.stop()
    st = stats_line(r)
    assert (st["requests_ok"], st["unsent"]) == (0, 1)
    assert "3 spans in 1 requests were not exported at shutdown" in r.stderr()


def test_slow_backend_never_blocks_events(rastro, perl_app, otlp_receiver):
    """A backend answering after 10 s (timeout 1 s): requests keep being
    processed meanwhile, and the span is sent again until it is accepted."""
    otlp_receiver.script({"status": 200, "delay_ms": 10000, "times": 2, "signal": "traces"})
    r = start(rastro, perl_app, otlp_receiver, extra="  timeout: 1s\n")
    port = perl_app.port
    assert get(port, "/") == 200
    wait_for(lambda: otlp_receiver.requests("traces"), timeout=10, what="the first export")
    # The export is hanging: records are still printed at once.
    for i in range(5):
        t = time.time()
        assert get(port, f"/users/{i}") == 200
        r.wait_records(2 + i, lambda x: x["server.port"] == port, timeout=2)
        assert time.time() - t < 1.5
    recs = r.wait_records(6, lambda x: x["server.port"] == port)
    first = recs[0]["span_id"]

    def answered():  # requests answered without delay, hence received by rastro
        return [q for q in otlp_receiver.requests("traces") if q["delay_ms"] == 0]
    wait_for(lambda: {s["spanId"] for s in otlp_receiver.spans(
        [q["request"] for q in answered()])} >= {x["span_id"] for x in recs},
        timeout=20, what="every span answered without delay")
    reqs = otlp_receiver.requests("traces")
    assert [q["delay_ms"] for q in reqs[:2]] == [10000, 10000]
    # the first span was retried after each timeout, and accepted once
    delivered = [s["spanId"] for s in otlp_receiver.spans([q["request"] for q in answered()])]
    assert delivered.count(first) == 1
    assert len(delivered) == len(set(delivered)) == 6
    timeouts = [ln for ln in r.stderr().splitlines() if "timed out" in ln]
    assert len(timeouts) == 1, timeouts  # logged once, though it happened twice
