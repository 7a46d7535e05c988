"""HTTP/1.x capture against real servers: the seed's Perl app, nginx, python.
Every test asserts exact records: count, method, path, status, sizes."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (APPS, ROOT, config_for_ports, free_port, needs_root, wait_for,
                      wait_port)

pytestmark = needs_root


def get(port, path, host="127.0.0.1", headers=None, method="GET", data=None):
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method, data=data,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def recv_responses(sock, n, timeout=10.0):
    """Reads until n complete HTTP responses (Content-Length framed) arrived."""
    sock.settimeout(timeout)
    buf = b""
    done = 0
    while done < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        done = 0
        rest = buf
        while b"\r\n\r\n" in rest:
            head, rest = rest.split(b"\r\n\r\n", 1)
            cl = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    cl = int(v)
            if len(rest) < cl:
                break
            rest = rest[cl:]
            done += 1
    return buf


def prometheus_value(port, name):
    """The value of the unlabelled sample `name` on rastro's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = [float(line.split(" ")[1]) for line in text.splitlines()
              if line.split(" ")[0] == name]
    assert len(values) == 1, (name, text)
    return values[0]


def server_records(r, port):
    return r.snapshot(lambda x: x["kind"] == "SERVER" and x["server.port"] == port)


def test_seed_config_unchanged_and_seed_requests(rastro, servers, tmp_path):
    """The seed's beyla.yml, unchanged, instruments the seed's app on 1337."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 1337)) == 0:
            pytest.skip("port 1337 is in use")
    app = servers(["perl", str(ROOT / "examples/perlapp/app.pl")], 1337,
                  log=tmp_path / "seed.log")
    r = rastro((ROOT / "examples/perlapp/beyla.yml").read_text())
    r.wait_traced(app.pid)
    assert get(1337, "/") == (200, b"Hello, eBPF + Beyla + Perl!")
    assert get(1337, "/products")[0] == 200
    assert get(1337, "/error")[0] == 404
    recs = r.wait_records(3, lambda x: x["server.port"] == 1337)
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"])
            for x in recs] == [("GET", "/", 200), ("GET", "/products", 200),
                               ("GET", "/error", 404)]
    first = recs[0]
    assert first["service.name"] == "perlapp"
    assert first["service.namespace"] == "poc-ebpf"
    assert first["process.pid"] == app.pid
    assert first["http.response.body.size"] == len(b"Hello, eBPF + Beyla + Perl!")
    assert first["http.request.body.size"] == 0
    assert first["client.address"] == "127.0.0.1"
    assert first["server.port"] == 1337
    assert first["network.protocol.version"] == "1.1"
    assert first["end_time_unix_nano"] > first["start_time_unix_nano"]
    assert abs(first["start_time_unix_nano"] / 1e9 - time.time()) < 60
    # The seed's file keeps Beyla's misplaced key: accepted without a warning.
    assert "unknown configuration key" not in r.stderr()


def test_query_is_separate_and_scrubbed(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    get(perl_app.port, "/products?color=red&secret=hunter2")
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/products"
    assert rec["url.query"] == "color=?&secret=?"
    assert "hunter2" not in str(rec)


def test_keep_alive_each_request_its_own_record(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    paths = ["/", "/products", "/status/404", "/fail", "/users/7"] * 4
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        for p in paths:
            s.sendall(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            recv_responses(s, 1)
    recs = r.wait_records(len(paths))
    assert [x["url.path"] for x in recs] == paths
    assert [x["http.response.status_code"] for x in recs] == [200, 200, 404, 500, 200] * 4
    assert len({x["client.port"] for x in recs}) == 1  # one connection
    assert all(("error.type" in x) == (x["http.response.status_code"] >= 500) for x in recs)


def test_pipelining(rastro, perl_app):
    """Three requests in one write before any response: three records, each with
    its own status and its own duration."""
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.sendall(b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n")
        recv_responses(s, 3)
    recs = r.wait_records(3)
    assert [(x["url.path"], x["http.response.status_code"]) for x in recs] == [
        ("/status/201", 201), ("/slow", 200), ("/status/404", 404)]
    # All three were read at once; the first is answered before /slow sleeps.
    assert len({x["start_time_unix_nano"] for x in recs}) == 1
    assert recs[0]["duration_ns"] < 100e6
    assert recs[1]["duration_ns"] >= 200e6
    assert recs[2]["duration_ns"] >= 200e6


def test_request_head_split_across_reads(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    parts = [b"GET /prod", b"ucts?a=1 HTTP/1.1\r\nHo", b"st: split\r\nUser-Agent: sp", b"lit/1\r\n\r\n"]
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for p in parts:
            s.sendall(p)
            time.sleep(0.05)
        recv_responses(s, 1)
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/products"
    assert rec["url.query"] == "a=?"
    assert rec["user_agent.original"] == "split/1"
    assert rec["server.address"] == "split"
    assert rec["http.response.status_code"] == 200


def test_large_response_content_length(rastro, perl_app):
    """A 3 MB body leaves in many writes; the record ends with the last one."""
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    status, body = get(perl_app.port, "/big?size=3000000")
    assert status == 200 and len(body) == 3000000
    get(perl_app.port, "/")
    recs = r.wait_records(2)
    assert recs[0]["url.path"] == "/big"
    assert recs[0]["http.response.body.size"] == 3000000
    assert recs[1]["url.path"] == "/"  # framing kept across the big body


def test_chunked_response_many_writes(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.sendall(b"GET /chunked?n=20 HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        s.settimeout(10)
        while not buf.endswith(b"0\r\n\r\n"):
            buf += s.recv(65536)
        s.sendall(b"GET /products HTTP/1.1\r\nHost: x\r\n\r\n")
        recv_responses(s, 1)
    recs = r.wait_records(2)
    assert recs[0]["url.path"] == "/chunked"
    assert recs[0]["http.response.status_code"] == 200
    assert recs[0]["http.response.body.size"] == 20 * 101
    assert recs[1]["url.path"] == "/products"


def test_duration_ends_with_the_last_chunk(rastro, perl_app):
    """Duration ends when the last byte of the response is written: a chunked
    response whose chunks (and final 0-chunk) are written 150 ms apart lasts at
    least the sum of the delays, not until its head or first chunk."""
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    n, delay_ms = 3, 150
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.sendall(f"GET /chunked?n={n}&delay={delay_ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buf = b""
        s.settimeout(10)
        t0 = time.monotonic()
        while not buf.endswith(b"0\r\n\r\n"):
            buf += s.recv(65536)
        elapsed = time.monotonic() - t0
    assert elapsed >= n * delay_ms / 1000  # the server did wait
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/chunked"
    assert rec["http.response.status_code"] == 200
    assert rec["http.response.body.size"] == n * 101
    total = n * delay_ms * 1e6  # delays before chunks 2..n and before the 0-chunk
    assert total <= rec["duration_ns"] < total + 250e6, rec["duration_ns"]


def test_slow_duration(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    get(perl_app.port, "/slow")
    (rec,) = r.wait_records(1)
    assert 200e6 <= rec["duration_ns"] <= 260e6, rec["duration_ns"]


def test_head_204_304(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        # HEAD: Content-Length announces a body that is not sent.
        s.sendall(b"HEAD /products HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        for code in (204, 304):
            s.sendall(f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.2)
            assert s.recv(65536).startswith(f"HTTP/1.1 {code}".encode())
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        recv_responses(s, 1)
    recs = r.wait_records(4)
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"])
            for x in recs] == [("HEAD", "/products", 200), ("GET", "/status/204", 204),
                               ("GET", "/status/304", 304), ("GET", "/", 200)]
    assert [x["http.response.body.size"] for x in recs] == [0, 0, 0, 27]


def test_expect_100_continue(rastro, servers, tmp_path):
    """python's http.server answers Expect: 100-continue with an interim 100;
    the record carries the final status and both body sizes."""
    port = free_port()
    app = servers(["/usr/bin/python3", str(APPS / "pyapp.py"), str(port)], port,
                  log=tmp_path / "py.log")
    r = rastro(config_for_ports(port))
    r.wait_traced(app.pid)
    body = b"z" * 5000
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        s.settimeout(5)
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100")
        s.sendall(body)
        resp = recv_responses(s, 1)
        assert resp.endswith(body)
    (rec,) = r.wait_records(1)
    assert rec["http.request.method"] == "POST"
    assert rec["http.response.status_code"] == 200
    assert rec["http.request.body.size"] == 5000
    assert rec["http.response.body.size"] == 5000


def test_headers_over_4k_and_long_path(rastro, perl_app):
    """A head of ~9 KiB with a 3000-byte path: still one record, path cut at
    http.max_path_length."""
    prom_port = free_port()
    r = rastro(config_for_ports(perl_app.port, extra="http:\n  max_path_length: 64\n"),
               env={"RASTRO_PROMETHEUS_PORT": str(prom_port)})
    r.wait_traced(perl_app.pid)
    wait_port(prom_port)
    path = "/users/" + "a" * 3000
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 6000}\r\n\r\n".encode())
        recv_responses(s, 1)
        s.sendall(b"GET /products HTTP/1.1\r\nHost: x\r\n\r\n")
        recv_responses(s, 1)
    recs = r.wait_records(2)
    assert recs[0]["url.path"] == path[:64]
    assert recs[0]["http.response.status_code"] == 200
    assert recs[1]["url.path"] == "/products"
    # The head was cut at ebpf.capture_bytes: counted, as the loss causes say.
    assert prometheus_value(prom_port, "rastro_payloads_truncated_total") >= 1


def test_server_closes_without_response(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100) == b""
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/close"
    assert "http.response.status_code" not in rec
    assert rec["error.type"] == "no_response"


def test_connection_opened_before_rastro(rastro, perl_app):
    """A keep-alive connection established before rastro started is attributed
    from the socket itself: addresses and ports are right."""
    s = socket.create_connection(("127.0.0.1", perl_app.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    recv_responses(s, 1)
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    s.sendall(b"GET /products HTTP/1.1\r\nHost: x\r\n\r\n")
    recv_responses(s, 1)
    (rec,) = r.wait_records(1)
    client_port = s.getsockname()[1]
    s.close()
    assert rec["url.path"] == "/products"
    assert rec["client.port"] == client_port
    assert rec["server.port"] == perl_app.port
    assert rec["client.address"] == "127.0.0.1"


def test_ipv6_and_v4_mapped(rastro, servers, tmp_path):
    port = free_port()
    env = dict(os.environ, APP_LISTEN=f"http://[::]:{port}")
    app = servers(["perl", str(APPS / "app.pl"), str(port)], port, env=env,
                  log=tmp_path / "app6.log")
    r = rastro(config_for_ports(port))
    r.wait_traced(app.pid)
    assert get(port, "/", host="[::1]")[0] == 200
    assert get(port, "/products", host="127.0.0.1")[0] == 200
    recs = r.wait_records(2)
    assert recs[0]["client.address"] == "::1"
    assert recs[1]["client.address"] == "127.0.0.1"  # IPv4-mapped, shown as IPv4
    assert [x["url.path"] for x in recs] == ["/", "/products"]


def test_python_http_server(rastro, servers, tmp_path):
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hello from python\n")
    srv = servers(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                  port, cwd=tmp_path / "www", log=tmp_path / "py.log")
    r = rastro(config_for_ports(port))
    r.wait_traced(srv.pid)
    assert get(port, "/hello.txt") == (200, b"hello from python\n")
    assert get(port, "/missing")[0] == 404
    # One thread per connection (ThreadingHTTPServer): records of different
    # connections come in the order their CPUs delivered them.
    recs = sorted(r.wait_records(2), key=lambda x: x["start_time_unix_nano"])
    assert [(x["url.path"], x["http.response.status_code"]) for x in recs] == [
        ("/hello.txt", 200), ("/missing", 404)]
    assert recs[0]["http.response.body.size"] == len("hello from python\n")
    assert recs[0]["network.protocol.version"] == "1.1"


NGINX_CONF = """
daemon off;
user root;
master_process on;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {dir}/www; }}
        location /teapot {{ return 418 "short and stout"; }}
    }}
}}
"""


def start_nginx(servers, tmp_path, port):
    (tmp_path / "www").mkdir(exist_ok=True)
    (tmp_path / "www" / "index.html").write_text("<h1>nginx under rastro</h1>\n")
    (tmp_path / "www" / "big.bin").write_bytes(b"n" * 2_000_000)
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port))
    return servers(["nginx", "-c", str(conf), "-p", str(tmp_path)], port,
                   log=tmp_path / "nginx.out")


def test_nginx_prefork_workers_and_sendfile(rastro, servers, tmp_path):
    """nginx started after rastro: the master's listen() selects it, the workers
    it forks are traced from birth; a sendfile() body is counted."""
    port = free_port()
    r = rastro(config_for_ports(port, name="web"))
    ngx = start_nginx(servers, tmp_path, port)
    r.wait_traced(ngx.pid)
    assert get(port, "/index.html")[0] == 200
    assert get(port, "/teapot")[0] == 418
    status, body = get(port, "/big.bin")
    assert status == 200 and len(body) == 2_000_000
    # Two workers, a connection each: in the order their CPUs delivered them.
    recs = sorted(r.wait_records(3), key=lambda x: x["start_time_unix_nano"])
    assert [(x["url.path"], x["http.response.status_code"]) for x in recs] == [
        ("/index.html", 200), ("/teapot", 418), ("/big.bin", 200)]
    assert recs[2]["http.response.body.size"] == 2_000_000
    assert all(x["service.name"] == "web" for x in recs)
    assert all(x["process.pid"] != ngx.pid for x in recs)  # served by workers


def test_process_started_after_rastro_is_traced_within_1s(rastro, servers, tmp_path):
    port = free_port()
    r = rastro(config_for_ports(port))
    t0 = time.time()
    app = servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "late.log")
    r.wait_traced(app.pid, timeout=5)
    assert get(port, "/")[0] == 200
    r.wait_records(1)
    # From listen() to traced: the event path, well under a second.
    assert time.time() - t0 < 10


def test_restart_gets_new_pid_and_old_one_is_forgotten(rastro, servers, tmp_path):
    port = free_port()
    r = rastro(config_for_ports(port))
    first = servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "a.log")
    r.wait_traced(first.pid)
    get(port, "/")
    first.stop()
    wait_for(lambda: "no longer running" in r.stderr(), what="exit to be noticed")
    second = servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "b.log")
    r.wait_traced(second.pid)
    get(port, "/products")
    recs = r.wait_records(2)
    assert [(x["process.pid"], x["url.path"]) for x in recs] == [(first.pid, "/"),
                                                                 (second.pid, "/products")]


def test_untraced_process_is_not_reported(rastro, perl_app, servers, tmp_path):
    other_port = free_port()
    other = servers(["perl", str(APPS / "app.pl"), str(other_port)], other_port,
                    log=tmp_path / "other.log")
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    get(other_port, "/")
    get(perl_app.port, "/products")
    recs = r.settle(quiet=1.0)
    assert [x["url.path"] for x in recs] == ["/products"]
    assert f"instrumenting pid {other.pid} " not in r.stderr()


SPLIT_CLOSE_SERVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = c.recv(4096)
        if not more:
            break
        buf += more
    if b"\r\n\r\n" not in buf:
        c.close()  # a probe that connected and left
        continue
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)
    c.sendall(b"0123456789")
    c.close()
"""


def test_client_read_that_consumes_fin(rastro, perl_app, servers, tmp_path):
    """The traced app is the client; the server sends its head, then the body
    and FIN together. The read that returns the body also consumes the FIN,
    which takes a TCP sequence number: that must not look like lost bytes."""
    port = free_port()
    script = tmp_path / "split_close.py"
    script.write_text(SPLIT_CLOSE_SERVER)
    servers(["/usr/bin/python3", str(script), str(port)], port, log=tmp_path / "sc.log")
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    for _ in range(3):
        assert get(perl_app.port, f"/call?url=http://127.0.0.1:{port}/x") == (200, b"downstream 200")
    clients = r.wait_records(3, lambda x: x["kind"] == "CLIENT")
    assert [(x["http.response.status_code"], x["http.response.body.size"]) for x in clients] == [
        (200, 10)] * 3
    assert all(x["duration_ns"] >= 200e6 for x in clients)
    r.stop()
    assert "events_lost=0 " in r.stderr(), r.stderr()[-500:]


IOV_SERVER = r"""
import json, os, socket, sys
# Each request (connection) is served with the next (reader, writer, status,
# response size) of the plan; a connection that sends nothing (a readiness
# probe) does not count.
plan = json.loads(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)

def small_bufs():
    # several iovecs of odd sizes: the head straddles them
    return [bytearray(7), bytearray(61), bytearray(1000), bytearray(3000)]

def read_some(c, how):
    if how == "readv":
        bufs = small_bufs()
        n = os.readv(c.fileno(), bufs)
        return b"".join(bufs)[:n]
    if how == "recvmsg":
        data, _, _, _ = c.recvmsg(65536)
        return data
    if how == "recvmsg_into":
        bufs = small_bufs()
        n, _, _, _ = c.recvmsg_into(bufs)
        return b"".join(bufs)[:n]
    raise ValueError(how)

def write_all(c, how, head, body):
    if how == "sendmsg":
        parts = [head, body]
    elif how == "writev":
        parts = [head, body]
    elif how == "writev_many":  # the body in 1000-byte iovecs
        parts = [head] + [body[i:i + 1000] for i in range(0, len(body), 1000)]
    else:
        raise ValueError(how)
    data = b"".join(parts)
    n = c.sendmsg(parts) if how == "sendmsg" else os.writev(c.fileno(), parts)
    if n < len(data):
        c.sendall(data[n:])

k = 0
while True:
    c, _ = s.accept()
    reader, writer, status, size = plan[k % len(plan)]
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = read_some(c, reader)
        if not more:
            break
        buf += more
    if b"\r\n\r\n" not in buf:
        c.close()
        continue
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        more = read_some(c, reader)
        if not more:
            break
        body += more
    k += 1
    rbody = b"r" * size
    rhead = (f"HTTP/1.1 {status} X\r\nContent-Length: {size}\r\n"
             "Connection: close\r\n\r\n").encode()
    write_all(c, writer, rhead, rbody)
    c.close()
"""

IOV_PLAN = [  # reader, writer, status, response body size; request method, path, body size
    ("readv", "sendmsg", 200, 11, "GET", "/readv/sendmsg", 0),
    ("recvmsg", "writev", 201, 2000, "POST", "/recvmsg/writev", 17),
    ("recvmsg_into", "sendmsg", 404, 300, "PUT", "/recvmsg_into/sendmsg", 5000),
    ("readv", "writev_many", 503, 9000, "POST", "/readv/writev_many", 12000),
]


def test_vectored_and_msg_syscalls(rastro, servers, tmp_path):
    """A raw server that reads with readv / recvmsg (several iovecs) and answers
    with sendmsg / writev of [head, body]: exact records for each variant."""
    port = free_port()
    script = tmp_path / "iov_server.py"
    script.write_text(IOV_SERVER)
    plan = json.dumps([list(p[:4]) for p in IOV_PLAN])
    srv = servers(["/usr/bin/python3", str(script), str(port), plan], port,
                  log=tmp_path / "iov.log")
    r = rastro(config_for_ports(port, name="iov"))
    r.wait_traced(srv.pid)
    for reader, writer, status, size, method, path, req_size in IOV_PLAN:
        body = b"q" * req_size
        head = f"{method} {path}?via={reader} HTTP/1.1\r\nHost: x\r\n"
        if req_size:
            head += f"Content-Length: {req_size}\r\n"
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head.encode() + b"\r\n" + body)
            resp = recv_responses(s, 1)
        assert resp.startswith(f"HTTP/1.1 {status} ".encode()) and resp.endswith(b"r" * size)
    r.wait_records(len(IOV_PLAN), lambda x: x["kind"] == "SERVER")
    r.settle(quiet=0.5)
    recs = server_records(r, port)
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"],
             x["http.request.body.size"], x["http.response.body.size"]) for x in recs] == [
        (m, p, st, rq, sz) for _, _, st, sz, m, p, rq in IOV_PLAN]
    assert all(x["process.pid"] == srv.pid and x["service.name"] == "iov" for x in recs)
    r.stop()
    assert "events_lost=0 " in r.stderr(), r.stderr()[-500:]


def test_invalid_utf8_is_replaced(rastro, perl_app):
    """A client can send any bytes; rastro reports valid UTF-8 (U+FFFD for
    the bytes that are not), so JSON lines and OTLP strings stay valid."""
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    with socket.create_connection(("127.0.0.1", perl_app.port)) as s:
        s.sendall(b"GET /caf\xe9/\xc3\xa9?q=\xff HTTP/1.1\r\nHost: x\r\nUser-Agent: a\xfeb\r\n\r\n")
        recv_responses(s, 1)
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/caf\ufffd/\u00e9"
    assert rec["user_agent.original"] == "a\ufffdb"
