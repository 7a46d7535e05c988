"""Trace context: parent/child inside a process (the serving thread's client
calls), across processes on this host (both ends of one TCP connection, no
header injection), incoming traceparent, sampling."""
import os
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import APPS, free_port, needs_root, wait_for
from otlp_fixtures import attrs, otlp_receiver  # noqa: F401  (fixture)
from test_http1 import get, start_nginx

pytestmark = needs_root


def instrument(*entries):
    out = "discovery:\n  instrument:\n"
    for port, name in entries:
        out += f"    - open_ports: {port}\n      name: {name}\n      namespace: chain\n"
    return out


def by_service(recs, name, kind):
    return [r for r in recs if r["service.name"] == name and r["kind"] == kind]


def start_chain(r, servers, tmp_path, perl_port, py_port, ngx_port):
    """The Perl app, the Python app and nginx, started after rastro r and traced
    by it; one request through all three. Returns nginx's URL (the
    servers, front to back, are r.chain)."""
    ngx = start_nginx(servers, tmp_path, ngx_port)
    py = servers(["/usr/bin/python3", str(APPS / "pyapp.py"), str(py_port), "--threads"], py_port,
                 log=tmp_path / "py.log")
    perl = servers(["perl", str(APPS / "app.pl"), str(perl_port)], perl_port,
                   log=tmp_path / "perl.log")
    for p in (ngx.pid, py.pid, perl.pid):
        r.wait_traced(p)
    r.chain = (perl, py, ngx)
    inner = f"http://127.0.0.1:{ngx_port}/index.html"
    middle = f"http://127.0.0.1:{py_port}/call?url={urllib.parse.quote(inner, safe='')}"
    status, body = get(perl_port, "/call?url=" + urllib.parse.quote(middle, safe=""))
    assert status == 200 and body == b"downstream 200"
    return inner


def chain_spans(recs):
    """front SERVER, front CLIENT, middle SERVER, middle CLIENT, back SERVER:
    one trace, each the child of the one before."""
    (front_srv,) = by_service(recs, "front", "SERVER")
    (front_cli,) = by_service(recs, "front", "CLIENT")
    (mid_srv,) = by_service(recs, "middle", "SERVER")
    (mid_cli,) = by_service(recs, "middle", "CLIENT")
    (back_srv,) = by_service(recs, "back", "SERVER")
    chain = [front_srv, front_cli, mid_srv, mid_cli, back_srv]
    assert len({x["trace_id"] for x in chain}) == 1
    for parent, child in zip(chain, chain[1:]):
        assert child["parent_span_id"] == parent["span_id"], (parent["name"], child["name"])
    return chain


def test_three_services_one_trace(rastro, servers, tmp_path, otlp_receiver):
    """Perl (Mojolicious) -> Python (http.server) -> nginx, one rastro, no
    header injection: one trace, SERVER/CLIENT/SERVER/CLIENT/SERVER, each the
    child of the one before, timings nested; checked on the printer's records
    and on the OTLP spans decoded with the official definitions."""
    perl_port, py_port, ngx_port = free_port(), free_port(), free_port()
    r = rastro(instrument((perl_port, "front"), (py_port, "middle"), (ngx_port, "back")),
               env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url,
                    "OTEL_BSP_SCHEDULE_DELAY": "100"})
    start_chain(r, servers, tmp_path, perl_port, py_port, ngx_port)

    chain = chain_spans(r.wait_records(5))
    front_srv, front_cli, mid_srv, mid_cli, back_srv = chain
    assert front_srv["parent_span_id"] == ""
    for parent, child in zip(chain, chain[1:]):
        assert child["start_time_unix_nano"] >= parent["start_time_unix_nano"]
        assert child["end_time_unix_nano"] <= parent["end_time_unix_nano"]
    assert front_cli["url.full"].startswith(f"http://127.0.0.1:{py_port}/call?url=")
    assert front_cli["server.port"] == py_port
    assert mid_cli["url.full"] == f"http://127.0.0.1:{ngx_port}/index.html"
    assert mid_cli["http.response.status_code"] == 200
    assert back_srv["url.path"] == "/index.html"
    assert mid_srv["url.path"] == "/call"

    # The same trace as the backend receives it.
    spans = otlp_receiver.wait_spans(5)
    assert len(spans) == 5
    by_id = {s["spanId"]: s for s in spans}
    want = [("front", "SPAN_KIND_SERVER", "GET /call"), ("front", "SPAN_KIND_CLIENT", "GET"),
            ("middle", "SPAN_KIND_SERVER", "GET /call"), ("middle", "SPAN_KIND_CLIENT", "GET"),
            ("back", "SPAN_KIND_SERVER", "GET /index.html")]
    otlp_chain = [by_id[x["span_id"]] for x in chain]
    assert [(s["_resource"]["service.name"], s["kind"], s["name"]) for s in otlp_chain] == want
    assert {s["traceId"] for s in otlp_chain} == {front_srv["trace_id"]}
    assert "parentSpanId" not in otlp_chain[0]
    # Span flags: sampled (bit 0); bit 8, whether the parent is remote is
    # known; bit 9, it is: each server's parent is another process's client.
    assert [s["flags"] for s in otlp_chain] == [0x101, 0x101, 0x301, 0x101, 0x301]
    for parent, child in zip(otlp_chain, otlp_chain[1:]):
        assert child["parentSpanId"] == parent["spanId"]
        assert int(child["startTimeUnixNano"]) >= int(parent["startTimeUnixNano"])
        assert int(child["endTimeUnixNano"]) <= int(parent["endTimeUnixNano"])
    a = [attrs(s["attributes"]) for s in otlp_chain]
    assert a[1]["server.port"] == py_port and a[1]["http.response.status_code"] == 200
    assert a[3]["url.full"] == f"http://127.0.0.1:{ngx_port}/index.html"
    assert a[4]["http.route"] == "/index.html"


def pin(pid, cpu):
    """Pins every thread of pid and of its children (nginx's workers) to cpu."""
    pids = [pid] + [int(x) for x in subprocess.run(["pgrep", "-P", str(pid)], text=True,
                                                   capture_output=True).stdout.split()]
    for p in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(p)], check=True,
                       stdout=subprocess.DEVNULL)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_chains_link_at_a_low_rate(rastro, servers, tmp_path):
    """A request through the three services every 0.3 s, the front and the
    middle on one CPU and the back (nginx) on the other: each CPU holds its
    events for up to the poll interval, which grows to 500 ms at such a
    rate, so nginx's events of a request can be read after the middle's
    next request. The middle's finished client context must outlive that
    (its grace), or nginx's server span no longer finds its parent: every
    chain is one trace, each span the child of the one before (4 of the 13
    were split with a fixed 100 ms grace and a 500 ms poll)."""
    perl_port, py_port, ngx_port = free_port(), free_port(), free_port()
    r = rastro(instrument((perl_port, "front"), (py_port, "middle"), (ngx_port, "back")))
    inner = start_chain(r, servers, tmp_path, perl_port, py_port, ngx_port)
    for server, cpu in zip(r.chain, (0, 0, 1)):
        pin(server.pid, cpu)
    middle = f"http://127.0.0.1:{py_port}/call?url={urllib.parse.quote(inner, safe='')}"
    n = 12
    for _ in range(n):
        time.sleep(0.3)
        assert get(perl_port, "/call?url=" + urllib.parse.quote(middle, safe="")) == (
            200, b"downstream 200")
    recs = r.wait_records(5 * (n + 1))
    traces = {}
    for x in recs:
        traces.setdefault(x["trace_id"], []).append(x)
    assert sorted(len(v) for v in traces.values()) == [5] * (n + 1), sorted(
        len(v) for v in traces.values())
    for spans in traces.values():
        chain_spans(spans)


def test_incoming_traceparent_is_honoured(rastro, perl_app):
    r = rastro(instrument((perl_app.port, "svc")))
    r.wait_traced(perl_app.pid)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    get(perl_app.port, "/products", headers={"traceparent": tp, "tracestate": "vendor=x"})
    (rec,) = r.wait_records(1)
    assert rec["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert rec["parent_span_id"] == "b7ad6b7169203331"
    assert rec["span_id"] != "b7ad6b7169203331"


@pytest.mark.parametrize("bad", [
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # uppercase
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",  # 00 with extra
    "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",  # short
])
def test_invalid_traceparent_starts_new_trace(rastro, perl_app, bad):
    r = rastro(instrument((perl_app.port, "svc")))
    r.wait_traced(perl_app.pid)
    get(perl_app.port, "/", headers={"traceparent": bad})
    (rec,) = r.wait_records(1)
    assert rec["parent_span_id"] == ""
    assert rec["trace_id"] != "0af7651916cd43dd8448eb211c80319c"
    assert len(rec["trace_id"]) == 32 and int(rec["trace_id"], 16) != 0


def test_future_version_traceparent_accepted(rastro, perl_app):
    r = rastro(instrument((perl_app.port, "svc")))
    r.wait_traced(perl_app.pid)
    tp = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"
    get(perl_app.port, "/", headers={"traceparent": tp})
    (rec,) = r.wait_records(1)
    assert rec["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def many_requests(port, n):
    """n sequential requests on keep-alive connections (Mojolicious closes a
    connection after 100 requests: reconnect then)."""
    import socket
    done = 0
    while done < n:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(10)
            while done < n:
                buf = b""
                try:
                    s.sendall(b"GET /products HTTP/1.1\r\nHost: x\r\n\r\n")
                    while b"}" not in buf:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                except ConnectionError:
                    pass
                if b"}" not in buf:
                    break  # closed before answering: reconnect and resend
                done += 1


@pytest.mark.parametrize("sampler,arg,ratio", [
    ("always_off", "1", 0.0),
    ("always_on", "0", 1.0),
    ("parentbased_traceidratio", "0.5", 0.5),
    ("traceidratio", "0.1", 0.1),
])
def test_sampler(rastro, perl_app, sampler, arg, ratio):
    r = rastro(instrument((perl_app.port, "svc")),
               env={"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg})
    r.wait_traced(perl_app.pid)
    many_requests(perl_app.port, 2000)
    r.wait_records(2000, timeout=60)
    recs = r.settle(quiet=0.5)
    n = len(recs)
    kept = sum(1 for x in recs if x["sampled"])
    # Binomial(n, ratio): within 4.5 standard deviations.
    sigma = (n * ratio * (1 - ratio)) ** 0.5
    assert abs(kept - n * ratio) <= 4.5 * sigma, (kept, n)
    if ratio in (0.0, 1.0):
        assert kept == n * ratio


def test_parent_based_follows_incoming_flag(rastro, perl_app):
    r = rastro(instrument((perl_app.port, "svc")),
               env={"OTEL_TRACES_SAMPLER": "parentbased_always_on"})
    r.wait_traced(perl_app.pid)
    get(perl_app.port, "/", headers={
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"})
    get(perl_app.port, "/", headers={
        "traceparent": "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    recs = r.wait_records(2)
    assert [x["sampled"] for x in recs] == [False, True]


def test_always_off_exports_nothing(rastro, perl_app, otlp_receiver):
    r = rastro(instrument((perl_app.port, "svc")),
               env={"OTEL_TRACES_SAMPLER": "always_off",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url,
                    "OTEL_BSP_SCHEDULE_DELAY": "100"})
    r.wait_traced(perl_app.pid)
    for _ in range(20):
        get(perl_app.port, "/products")
    r.wait_records(20)
    r.stop()  # flushes whatever was queued
    assert otlp_receiver.spans() == []
    assert "spans handed to the client=0 " in r.stderr()


def test_ratio_sampler_exports_what_it_keeps(rastro, perl_app, otlp_receiver):
    r = rastro(instrument((perl_app.port, "svc")),
               env={"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url,
                    "OTEL_BSP_SCHEDULE_DELAY": "100"})
    r.wait_traced(perl_app.pid)
    many_requests(perl_app.port, 400)
    r.wait_records(400, timeout=60)
    # Every record, not the first 400: after a connection's 100th response
    # (Connection: close) Mojolicious can read and answer the client's next
    # request while the client gets a reset and sends it again on a new
    # connection (a client that counted: 403 sent for 400 answers read).
    recs = r.settle()
    r.stop()
    kept = {x["span_id"] for x in recs if x["sampled"]}
    exported = {s["spanId"] for s in otlp_receiver.spans()}
    assert exported == kept
    assert 100 < len(kept) < 300


TEXT_IDS = re.compile(r" svc=chain/svc pid=(\d+) trace=([0-9a-f]{32}) span=([0-9a-f]{16}) "
                      r"parent=([0-9a-f]{16}|-)$")


def test_text_printer_prints_ids(rastro, perl_app, otlp_receiver):
    """The text printer ends each line with the span's ids: an incoming
    traceparent's trace id and parent, or "-" for a root span; they are the
    ids the same spans carry over OTLP."""
    r = rastro(instrument((perl_app.port, "svc")), printer="text",
               env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url,
                    "OTEL_BSP_SCHEDULE_DELAY": "100"})
    r.wait_traced(perl_app.pid)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert get(perl_app.port, "/products", headers={"traceparent": tp})[0] == 200
    assert get(perl_app.port, "/status/404")[0] == 404

    def printed():
        with r._lock:
            return [ln for ln in r.lines if " svc=chain/svc " in ln]
    lines = wait_for(lambda: len(printed()) >= 2 and printed(), what="two printed lines")
    assert r.records == []  # text, not JSON
    assert len(lines) == 2, lines
    got = [TEXT_IDS.search(ln) for ln in lines]
    assert all(got), lines
    (pid1, trace1, span1, parent1), (pid2, trace2, span2, parent2) = [m.groups() for m in got]
    assert "SERVER HTTP/1.1 200 GET /products" in lines[0]
    assert "SERVER HTTP/1.1 404 GET /status/404" in lines[1]
    assert int(pid1) == int(pid2) == perl_app.pid
    # the incoming context: its trace id, its span as the parent, a new span id
    assert trace1 == "0af7651916cd43dd8448eb211c80319c"
    assert parent1 == "b7ad6b7169203331"
    assert span1 != parent1 and int(span1, 16) != 0
    # no traceparent: a new root span
    assert parent2 == "-"
    assert trace2 != trace1 and int(trace2, 16) != 0 and int(span2, 16) != 0

    # The very ids the backend receives for these requests.
    spans = otlp_receiver.wait_spans(2)
    by_id = {s["spanId"]: s for s in spans}
    assert set(by_id) == {span1, span2}
    assert by_id[span1]["traceId"] == trace1
    assert by_id[span1]["parentSpanId"] == parent1
    assert by_id[span2]["traceId"] == trace2
    assert "parentSpanId" not in by_id[span2]
    assert attrs(by_id[span1]["attributes"])["url.path"] == "/products"
    assert attrs(by_id[span2]["attributes"])["url.path"] == "/status/404"
