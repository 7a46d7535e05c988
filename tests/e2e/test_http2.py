"""HTTP/2 and gRPC capture against real implementations: Python gRPC
(python3-grpcio, C-core) server and client, nghttp2's nghttpd, h2load and
nghttp, curl (prior knowledge and h2c upgrade), Apache's mod_http2 (h2c
upgrade). Servers are selected by open_ports, clients (in their own tests) by
exe_path. Every test asserts exact records."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import APPS, config_for_ports, free_port, needs_root
from otlp_fixtures import attrs, otlp_receiver  # noqa: F401  (fixture)

pytestmark = needs_root

PYTHON = "/usr/bin/python3"
GREETER = APPS / "grpc_greeter.py"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def exe(name):
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed")
    return path


def records(r, kind, port=None):
    return r.snapshot(lambda x: x["kind"] == kind and (port is None or x["server.port"] == port))


def settle_exact(r, n, pred, timeout=20.0):
    """Waits for n records, then a quiet second, and returns all: exactly n
    is asserted by the caller. When they do not come, fails with rastro's
    own account of what it lost."""
    try:
        r.wait_records(n, pred, timeout=timeout)
    except TimeoutError as e:
        r.stop()
        stats = [line for line in r.stderr().splitlines() if "events:" in line]
        raise AssertionError(f"{e}; rastro says: {stats}") from None
    return r.settle(pred, quiet=1.0)


# ---- gRPC


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """Python stubs generated from tests/e2e/apps/greeter.proto."""
    out = tmp_path_factory.mktemp("grpc-stubs")
    subprocess.run([PYTHON, "-m", "grpc_tools.protoc", f"-I{APPS}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(APPS / "greeter.proto")], check=True)
    return out


def grpc_server(servers, tmp_path, stubs, interp=PYTHON):
    port = free_port()
    return servers([interp, str(GREETER), str(stubs), "server", str(port)], port,
                   log=tmp_path / "grpc-server.log")


def grpc_client(stubs, port, *actions, timeout=60):
    """Runs the client to completion; returns its report lines."""
    import json
    out = subprocess.run([PYTHON, str(GREETER), str(stubs), "client", str(port), *actions],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def grpc_base(rec, kind, port):
    assert rec["kind"] == kind
    assert rec["rpc.system.name"] == "grpc"
    assert rec["network.protocol.version"] == "2"
    assert rec["server.port"] == port
    assert rec["name"] == rec["rpc.method"]
    assert "rastro.unresolved" not in rec
    # RPC conventions: no HTTP attributes on gRPC spans
    assert "http.request.method" not in rec and "url.path" not in rec


def test_grpc_server_unary_streaming_errors(rastro, servers, tmp_path, stubs):
    srv = grpc_server(servers, tmp_path, stubs)
    r = rastro(config_for_ports(srv.port, name="greeter"))
    r.wait_traced(srv.pid)
    got = grpc_client(stubs, srv.port, "hello:bob", "slow:200", "fail:5", "fail:13",
                      "stream:5:40")
    assert [g.get("code") for g in got] == [None, None, 5, 13, None]
    recs = settle_exact(r, 5, lambda x: x["kind"] == "SERVER")
    assert [(x["rpc.method"], x["rpc.response.status_code"], x.get("error.type"))
            for x in recs] == [
        ("rastro.test.Greeter/SayHello", "OK", None),
        ("rastro.test.Greeter/SayHello", "OK", None),
        # on the server NOT_FOUND is the caller's problem, INTERNAL is not
        ("rastro.test.Greeter/Fail", "NOT_FOUND", None),
        ("rastro.test.Greeter/Fail", "INTERNAL", "INTERNAL"),
        ("rastro.test.Greeter/StreamHellos", "OK", None),
    ]
    for x in recs:
        grpc_base(x, "SERVER", srv.port)
        assert x["service.name"] == "greeter"
    assert len({x["client.port"] for x in recs}) == 1  # one channel, one connection
    assert 200e6 <= recs[1]["duration_ns"] < 1e9
    assert recs[0]["duration_ns"] < 100e6
    # streaming: from the request's first frame to the trailers after 5 replies
    assert 4 * 40e6 <= recs[4]["duration_ns"] < 1e9


def max_in_flight(recs):
    events = sorted([(x["start_time_unix_nano"], 1) for x in recs] +
                    [(x["end_time_unix_nano"], -1) for x in recs], key=lambda e: (e[0], e[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_grpc_server_concurrent_calls_one_channel(rastro, servers, tmp_path, stubs):
    """25 SayHello (the i-th sleeping 100 + 4 i ms) and 25 Fail in flight at
    once on one channel: each stream keeps its own method, status and end.
    (The client writes all 50 requests at once: more would exceed the 4096
    bytes the kernel side copies of one syscall, and the HEADERS beyond are
    never seen.)"""
    srv = grpc_server(servers, tmp_path, stubs)
    r = rastro(config_for_ports(srv.port, name="greeter"))
    r.wait_traced(srv.pid)
    (got,) = grpc_client(stubs, srv.port, "mixed:25")
    assert (got["ok"], got["not_found"]) == (25, 25)
    recs = settle_exact(r, 50, lambda x: x["kind"] == "SERVER")
    assert len(recs) == 50
    hello = [x for x in recs if x["rpc.method"] == "rastro.test.Greeter/SayHello"]
    fail = [x for x in recs if x["rpc.method"] == "rastro.test.Greeter/Fail"]
    assert len(hello) == 25 and len(fail) == 25
    assert {x["rpc.response.status_code"] for x in hello} == {"OK"}
    assert {x["rpc.response.status_code"] for x in fail} == {"NOT_FOUND"}
    # Paired by stream id, each SayHello lasts at least its own sleep: the
    # k-th shortest at least the k-th shortest sleep. Ends taken from other
    # streams (Fail ends after ~1 ms) would break this.
    durations = sorted(x["duration_ns"] for x in hello)
    assert all(d >= (100 + 4 * k) * 1e6 for k, d in enumerate(durations)), durations
    for x in recs:
        grpc_base(x, "SERVER", srv.port)
    assert len({x["client.port"] for x in recs}) == 1
    assert max_in_flight(recs) >= 25


def test_grpc_incoming_traceparent(rastro, servers, tmp_path, stubs):
    srv = grpc_server(servers, tmp_path, stubs)
    r = rastro(config_for_ports(srv.port, name="greeter"))
    r.wait_traced(srv.pid)
    grpc_client(stubs, srv.port, f"traced:{TRACEPARENT}")
    (rec,) = settle_exact(r, 1, lambda x: x["kind"] == "SERVER")
    assert rec["rpc.method"] == "rastro.test.Greeter/SayHello"
    assert rec["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert rec["parent_span_id"] == "b7ad6b7169203331"


def test_grpc_connection_predates_rastro(rastro, servers, tmp_path, stubs):
    """A channel opened before rastro: its HPACK tables hold entries rastro
    never saw inserted. What decodes is reported, what does not is marked in
    rastro.unresolved; no method, path or status is ever guessed."""
    srv = grpc_server(servers, tmp_path, stubs)
    gate = tmp_path / "gate"
    client = subprocess.Popen(
        [PYTHON, str(GREETER), str(stubs), "client", str(srv.port), "hello:before",
         f"gate:{gate}", "hello:b", "fail:5", "stream:3:10", "hello:c", "fail:5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().startswith('{"call": "hello"')  # before rastro
        r = rastro(config_for_ports(srv.port, name="greeter"))
        r.wait_traced(srv.pid)
        gate.touch()
        assert client.wait(30) == 0, client.stderr.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    recs = settle_exact(r, 5, lambda x: x["kind"] == "SERVER")
    assert len(recs) == 5
    hello_b, fail1, stream, hello_c, fail2 = recs
    # hello:b and hello:c: :path, content-type and grpc-status refer to
    # entries inserted by the call before rastro: only POST and 200 decode.
    for x in (hello_b, hello_c):
        assert x["name"] == "POST"
        assert (x["http.request.method"], x["http.response.status_code"]) == ("POST", 200)
        assert "url.path" not in x and "rpc.method" not in x
        assert x["rastro.unresolved"] == "url.path,rpc.system.name"
    # Fail: a :path never sent before, and grpc-status 5 sent literally; the
    # second Fail refers to the entry the first one added, seen inserted.
    for x in (fail1, fail2):
        assert x["rpc.method"] == "rastro.test.Greeter/Fail"
        assert x["rpc.response.status_code"] == "NOT_FOUND"
        assert "rastro.unresolved" not in x
    # StreamHellos: its :path decodes; whether it is gRPC does not
    assert stream["url.path"] == "/rastro.test.Greeter/StreamHellos"
    assert stream["rastro.unresolved"] == "rpc.system.name"
    assert len({x["client.port"] for x in recs}) == 1


def copy_interpreter(tmp_path, name):
    """python3 under a name of its own: an exe_path glob selects exactly the
    process run by it (a glob like */python3* would also select pytest and
    any other python on the machine)."""
    dst = tmp_path / name
    shutil.copy2(os.path.realpath(PYTHON), dst)
    return str(dst)


def run_greeter_client(r, interp, stubs, port, tmp_path, *calls):
    """Runs the gRPC greeter client (interp: a copy of python3 that rastro
    selects by exe_path) with these calls; they start only once rastro traces
    the client (a gate file). Returns the finished process."""
    gate = tmp_path / "gate"
    client = subprocess.Popen(
        [interp, str(GREETER), str(stubs), "client", str(port), f"gate:{gate}", *calls],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r.wait_traced(client.pid)
        gate.touch()
        assert client.wait(30) == 0, client.stderr.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return client


def test_grpc_client_spans(rastro, servers, tmp_path, stubs):
    srv = grpc_server(servers, tmp_path, stubs)
    interp = copy_interpreter(tmp_path, "greeter-client-python3")
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               '    - exe_path: "*/greeter-client-python3"\n      name: greeter-client\n'
               '      namespace: test\n')
    client = run_greeter_client(r, interp, stubs, srv.port, tmp_path, "hello:bob", "fail:5",
                                "fail:13", "stream:3:20", "concurrent:10")
    recs = settle_exact(r, 14, lambda x: x["kind"] == "CLIENT")
    assert r.snapshot(lambda x: x["kind"] == "SERVER") == []
    assert [(x["rpc.method"], x["rpc.response.status_code"], x.get("error.type"))
            for x in recs[:4]] == [
        ("rastro.test.Greeter/SayHello", "OK", None),
        # on the client every status but OK is an error
        ("rastro.test.Greeter/Fail", "NOT_FOUND", "NOT_FOUND"),
        ("rastro.test.Greeter/Fail", "INTERNAL", "INTERNAL"),
        ("rastro.test.Greeter/StreamHellos", "OK", None),
    ]
    assert [(x["rpc.method"], x["rpc.response.status_code"]) for x in recs[4:]] == [
        ("rastro.test.Greeter/SayHello", "OK")] * 10
    for x in recs:
        grpc_base(x, "CLIENT", srv.port)
        assert x["server.address"] == "127.0.0.1"
        assert x["network.peer.address"] == "127.0.0.1"
        assert x["process.pid"] == client.pid
        assert x["service.name"] == "greeter-client"
    assert 2 * 20e6 <= recs[3]["duration_ns"] < 1e9


# ---- plain HTTP/2: nghttpd, curl, h2load, nghttp


INDEX = b"<h1>nghttpd under rastro</h1>\n"


@pytest.fixture
def nghttpd(servers, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(INDEX)
    (www / "big.bin").write_bytes(os.urandom(1_000_000))
    port = free_port()
    return servers([exe("nghttpd"), "--no-tls", "-d", str(www), str(port)], port,
                   log=tmp_path / "nghttpd.log")


def curl(*args):
    out = subprocess.run([exe("curl"), "-s", "-o", "/dev/null", "-w",
                          "%{http_code} %{size_download} %{http_version}", *args],
                         capture_output=True, text=True, timeout=30)
    code, size, version = out.stdout.split()
    return int(code), int(size), version


def curl_version():
    return subprocess.run([exe("curl"), "--version"], capture_output=True,
                          text=True).stdout.split()[1]


def test_curl_prior_knowledge_nghttpd(rastro, nghttpd, tmp_path):
    r = rastro(config_for_ports(nghttpd.port, name="h2"))
    r.wait_traced(nghttpd.pid)
    base = f"http://127.0.0.1:{nghttpd.port}"
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * 1000)
    assert curl("--http2-prior-knowledge", f"{base}/index.html?lang=pt&id=3") == (
        200, len(INDEX), "2")
    missing = curl("--http2-prior-knowledge", f"{base}/missing")
    assert missing[0] == 404
    assert curl("--http2-prior-knowledge", "--data-binary", f"@{body}", f"{base}/index.html") \
        == (200, len(INDEX), "2")
    assert curl("--http2-prior-knowledge", "-I", f"{base}/index.html")[0] == 200
    recs = settle_exact(r, 4, lambda x: x["kind"] == "SERVER")
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"])
            for x in recs] == [("GET", "/index.html", 200), ("GET", "/missing", 404),
                               ("POST", "/index.html", 200), ("HEAD", "/index.html", 200)]
    assert recs[0]["url.query"] == "lang=?&id=?"
    assert [x["http.response.body.size"] for x in recs] == [len(INDEX), missing[1],
                                                            len(INDEX), 0]
    assert [x["http.request.body.size"] for x in recs] == [0, 0, 1000, 0]
    for x in recs:
        assert x["network.protocol.version"] == "2"
        assert x["user_agent.original"] == f"curl/{curl_version()}"
        assert x["server.address"] == "127.0.0.1"
        assert x["server.port"] == nghttpd.port
        assert x["service.name"] == "h2"
        assert "rastro.unresolved" not in x
        assert ("error.type" in x) is False  # 404 is not a server error


def test_large_response_bodies(rastro, nghttpd):
    """1 MB bodies leave in writes of several 16 KB DATA frames, of which 4 KB
    are copied: the frames not seen are accounted for by length."""
    r = rastro(config_for_ports(nghttpd.port, name="h2"))
    r.wait_traced(nghttpd.pid)
    url = f"http://127.0.0.1:{nghttpd.port}"
    for _ in range(3):
        assert curl("--http2-prior-knowledge", f"{url}/big.bin") == (200, 1_000_000, "2")
    assert curl("--http2-prior-knowledge", f"{url}/index.html") == (200, len(INDEX), "2")
    recs = settle_exact(r, 4, lambda x: x["kind"] == "SERVER")
    assert [(x["url.path"], x["http.response.body.size"]) for x in recs] == [
        ("/big.bin", 1_000_000)] * 3 + [("/index.html", len(INDEX))]


def test_h2load_exact_count(rastro, nghttpd):
    r = rastro(config_for_ports(nghttpd.port, name="h2"))
    r.wait_traced(nghttpd.pid)
    out = subprocess.run([exe("h2load"), "-n", "200", "-c", "4", "-m", "10",
                          f"http://127.0.0.1:{nghttpd.port}/index.html"],
                         capture_output=True, text=True, timeout=60)
    assert "200 succeeded" in out.stdout, out.stdout
    recs = settle_exact(r, 200, lambda x: x["kind"] == "SERVER")
    assert len(recs) == 200
    assert {(x["http.request.method"], x["url.path"], x["http.response.status_code"],
             x["http.response.body.size"], x["network.protocol.version"]) for x in recs} == {
        ("GET", "/index.html", 200, len(INDEX), "2")}
    assert len({x["client.port"] for x in recs}) == 4
    assert all(x["user_agent.original"].startswith("h2load") for x in recs)


def gated_fifo(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    return fifo


def run_gated(r, argv, fifo, content, timeout=60):
    """Starts argv, which blocks reading fifo, until rastro traces it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r.wait_traced(proc.pid)
        with open(fifo, "w") as f:
            f.write(content)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return proc.pid, out


def test_h2load_client_spans(rastro, nghttpd, tmp_path):
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               '    - exe_path: "*/h2load"\n      name: loadgen\n      namespace: test\n')
    fifo = gated_fifo(tmp_path, "uris")
    pid, out = run_gated(r, [exe("h2load"), "-i", str(fifo), "-n", "200", "-c", "4", "-m", "10"],
                         fifo, f"http://127.0.0.1:{nghttpd.port}/index.html\n")
    assert "200 succeeded" in out, out
    recs = settle_exact(r, 200, lambda x: x["kind"] == "CLIENT")
    assert len(recs) == 200
    url = f"http://127.0.0.1:{nghttpd.port}/index.html"
    assert {(x["http.request.method"], x["url.full"], x["http.response.status_code"],
             x["http.response.body.size"], x["network.protocol.version"], x["process.pid"])
            for x in recs} == {("GET", url, 200, len(INDEX), "2", pid)}
    assert len({x["network.peer.address"] for x in recs}) == 1


def test_curl_client_prior_knowledge(rastro, nghttpd, tmp_path):
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               '    - exe_path: "*/curl"\n      name: curl\n      namespace: test\n')
    base = f"http://127.0.0.1:{nghttpd.port}"
    # one URL per curl: curl 7.88 fails a second request on a reused
    # prior-knowledge connection to nghttpd (exit 16), with or without rastro
    pids = []
    for i, path in enumerate(["/index.html?a=1", "/missing"]):
        fifo = gated_fifo(tmp_path, f"curlrc{i}")
        pids.append(run_gated(r, [exe("curl"), "-s", "-K", str(fifo)], fifo,
                              f'http2-prior-knowledge\nurl = "{base}{path}"\n'
                              'output = "/dev/null"\n')[0])
    recs = settle_exact(r, 2, lambda x: x["kind"] == "CLIENT")
    assert [(x["http.request.method"], x["url.full"], x["http.response.status_code"])
            for x in recs] == [("GET", f"{base}/index.html?a=?", 200),
                               ("GET", f"{base}/missing", 404)]
    assert recs[1]["error.type"] == "404"  # on the client 4xx is an error
    assert [x["process.pid"] for x in recs] == pids
    for x in recs:
        assert x["network.protocol.version"] == "2"
        assert x["server.port"] == nghttpd.port


# ---- h2c upgrade (Apache mod_http2; nghttpd does not implement it)


APACHE_CONF = """
ServerRoot {dir}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
User www-data
Group www-data
DocumentRoot {dir}/www
<Directory {dir}/www>
    Require all granted
</Directory>
Protocols h2c http/1.1
"""

APACHE_INDEX = b"hello from apache over h2c\n"


@pytest.fixture
def apache(servers):
    binary = "/usr/sbin/apache2"
    if not os.path.exists(binary) or not os.path.exists(
            "/usr/lib/apache2/modules/mod_http2.so"):
        pytest.skip("apache2 with mod_http2 is not installed")
    # Its workers run as www-data: a directory they can read (tmp_path is 0700).
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="rastro-apache-"))
    try:
        d.chmod(0o755)
        (d / "www").mkdir(mode=0o755)
        (d / "www" / "index.html").write_bytes(APACHE_INDEX)
        (d / "www" / "index.html").chmod(0o644)
        port = free_port()
        (d / "httpd.conf").write_text(APACHE_CONF.format(dir=d, port=port))
        srv = servers([binary, "-f", str(d / "httpd.conf"), "-DFOREGROUND"], port,
                      log=d / "out.log")
        yield srv
        srv.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_h2c_upgrade_server(rastro, apache):
    """curl --http2 and nghttp -u ask for h2c with an HTTP/1.1 request; after
    the 101 the connection is HTTP/2 and the request is stream 1."""
    r = rastro(config_for_ports(apache.port, name="apache"))
    r.wait_traced(apache.pid)
    base = f"http://127.0.0.1:{apache.port}"
    assert curl("--http2", f"{base}/index.html?via=curl") == (200, len(APACHE_INDEX), "2")
    out = subprocess.run([exe("nghttp"), "-u", "-v", f"{base}/index.html"], capture_output=True,
                         text=True, timeout=30)
    assert "HTTP Upgrade success" in out.stdout, out.stdout
    missing = curl("--http2", f"{base}/nope")
    assert missing[0] == 404
    # Records of different connections are not reported in time order
    # (docs/architecture.md): in the order the requests began.
    recs = sorted(settle_exact(r, 3, lambda x: x["kind"] == "SERVER"),
                  key=lambda x: x["start_time_unix_nano"])
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"],
             x["http.response.body.size"], x["network.protocol.version"]) for x in recs] == [
        ("GET", "/index.html", 200, len(APACHE_INDEX), "2"),
        ("GET", "/index.html", 200, len(APACHE_INDEX), "2"),
        ("GET", "/nope", 404, missing[1], "2")]
    assert recs[0]["url.query"] == "via=?"
    assert [x["user_agent.original"].split("/")[0] for x in recs] == ["curl", "nghttp2", "curl"]
    assert len({x["client.port"] for x in recs}) == 3


def test_h2c_upgrade_client(rastro, apache, tmp_path):
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               '    - exe_path: "*/curl"\n      name: curl\n      namespace: test\n')
    fifo = gated_fifo(tmp_path, "curlrc")
    base = f"http://127.0.0.1:{apache.port}"
    pid, _ = run_gated(r, [exe("curl"), "-s", "-K", str(fifo)], fifo,
                       f'http2\nurl = "{base}/index.html"\noutput = "/dev/null"\n')
    (rec,) = settle_exact(r, 1, lambda x: x["kind"] == "CLIENT")
    assert (rec["http.request.method"], rec["url.full"], rec["http.response.status_code"],
            rec["http.response.body.size"], rec["network.protocol.version"]) == (
        "GET", f"{base}/index.html", 200, len(APACHE_INDEX), "2")
    assert rec["process.pid"] == pid


def test_grpc_client_and_server_one_trace(rastro, servers, tmp_path, stubs):
    """Both ends traced by one rastro: each server span is the child of the
    client span of the same stream (matched by the TCP sequence number of the
    request's HEADERS frame), without any header injected."""
    srv = grpc_server(servers, tmp_path, stubs)
    interp = copy_interpreter(tmp_path, "greeter-client-python3")
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               f'    - open_ports: {srv.port}\n      name: greeter\n      namespace: test\n'
               '    - exe_path: "*/greeter-client-python3"\n      name: greeter-client\n'
               '      namespace: test\n')
    r.wait_traced(srv.pid)
    run_greeter_client(r, interp, stubs, srv.port, tmp_path, "hello:one", "fail:5", "concurrent:8")
    recs = settle_exact(r, 20, lambda x: True)
    clients = {x["span_id"]: x for x in recs if x["kind"] == "CLIENT"}
    servers_ = [x for x in recs if x["kind"] == "SERVER"]
    assert len(clients) == 10 and len(servers_) == 10
    for s in servers_:
        c = clients[s["parent_span_id"]]
        assert s["trace_id"] == c["trace_id"]
        assert (s["rpc.method"], s["rpc.response.status_code"]) == (
            c["rpc.method"], c["rpc.response.status_code"])
        # An event's time is read as its syscall returns: the server's last
        # send returns after loopback has handed its bytes to the client, and
        # the client's receive, on the other CPU, can return first (0.5 and
        # 1.1 µs earlier in the failures seen, about 1 run in 8, with this
        # build and the ones before); the same holds for the client's request
        # and the server's receive of it.
        assert c["start_time_unix_nano"] <= s["start_time_unix_nano"] + 20_000
        assert s["end_time_unix_nano"] <= c["end_time_unix_nano"] + 20_000


def test_grpc_span_status_otlp(rastro, servers, tmp_path, stubs, otlp_receiver):
    """The span status rastro exports (docs/traces.md): a gRPC server span is
    an error only for the server-fault codes (UNKNOWN, DEADLINE_EXCEEDED,
    UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), a client span for any
    code but OK; the status message is error.type. Both ends traced."""
    srv = grpc_server(servers, tmp_path, stubs)
    interp = copy_interpreter(tmp_path, "greeter-client-python3")
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               f'    - open_ports: {srv.port}\n      name: greeter\n      namespace: test\n'
               '    - exe_path: "*/greeter-client-python3"\n      name: greeter-client\n'
               '      namespace: test\n'
               'otel_traces_export:\n  schedule_delay: 200ms\n',
               env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url})
    r.wait_traced(srv.pid)
    run_greeter_client(r, interp, stubs, srv.port, tmp_path,
                       "hello:ok", "fail:5", "fail:13", "fail:3", "fail:2")
    recs = settle_exact(r, 10, lambda x: True)
    assert len(recs) == 10
    otlp_receiver.wait_spans(10)
    time.sleep(0.6)  # three batch delays: nothing more may come
    spans = otlp_receiver.spans()
    assert len(spans) == 10
    by_id = {s["spanId"]: s for s in spans}
    assert set(by_id) == {x["span_id"] for x in recs}
    want = {  # status code: (server span status, client span status)
        "OK": (None, None),
        "NOT_FOUND": (None, "NOT_FOUND"),
        "INTERNAL": ("INTERNAL", "INTERNAL"),
        "INVALID_ARGUMENT": (None, "INVALID_ARGUMENT"),
        "UNKNOWN": ("UNKNOWN", "UNKNOWN"),
    }
    for kind, col in (("SERVER", 0), ("CLIENT", 1)):
        mine = [x for x in recs if x["kind"] == kind]
        assert [x["rpc.response.status_code"] for x in mine] == list(want), kind
        for rec in mine:
            span = by_id[rec["span_id"]]
            a = attrs(span["attributes"])
            assert span["kind"] == "SPAN_KIND_" + kind
            assert span["name"] == a["rpc.method"] == rec["rpc.method"]
            assert a["rpc.response.status_code"] == rec["rpc.response.status_code"]
            err = want[rec["rpc.response.status_code"]][col]
            if err is None:
                assert "status" not in span, (kind, span)
                assert "error.type" not in a
            else:
                assert span["status"] == {"code": "STATUS_CODE_ERROR", "message": err}, kind
                assert a["error.type"] == err
