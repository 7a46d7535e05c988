"""Connections of a traced process that carry no protocol rastro knows (a
Redis server's own connections, WebSocket after HTTP/1's 101, TLS) are
ignored by the agent; once it has given up on one, it tells the kernel,
whose data events for that connection then stop before the payload copy
and the ring buffer (counted: rastro_events_muted_total). Only those
connections: a new one is examined again, and its end still reaches the
agent, which removes its mark. Both sets of kernel hooks."""
import socket
import ssl
import subprocess
import sys

import pytest

from conftest import config_for_ports, free_port, needs_root, wait_for
from db_fixtures import redis_server  # noqa: F401  (fixture)
from test_reliability_helpers import bpf_objects, map_entries, map_id_by_name, metric, \
    self_metrics

pytestmark = needs_root

HOOKS = pytest.mark.parametrize("hooks", ["socket", "syscall"])


def pings(s, n):
    """n PINGs, each answered before the next: 2n data events at the server."""
    for _ in range(n):
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        got = b""
        while not got.endswith(b"\r\n"):
            chunk = s.recv(64)
            assert chunk, "redis closed the connection"
            got += chunk
        assert got == b"+PONG\r\n"


def counts(prom):
    m = self_metrics(prom)
    return {k: metric(m, k) for k in (
        "rastro_events_received_total", "rastro_events_muted_total",
        "rastro_connections_muted_total", "rastro_connections_mute_failed_total",
        "rastro_connections")}


@HOOKS
def test_a_connection_without_a_known_protocol_stops_in_the_kernel(rastro, redis_server,
                                                                     hooks):
    """A traced Redis server (OBI#1025's configuration: open_ports 6379):
    rastro parses Redis as a client speaks it, so the server's connections
    carry nothing it reports. Before this, every command and reply was
    copied to the agent and dropped there."""
    prom = free_port()
    r = rastro(config_for_ports(redis_server.port, name="redis"),
               env={"RASTRO_EBPF_HOOKS": hooks, "RASTRO_PROMETHEUS_PORT": str(prom)})
    r.wait_traced(redis_server.proc.pid)
    mutes = map_id_by_name(bpf_objects(r.proc.pid), "mutes")
    with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
        # 8 chunks without a protocol: the agent gives up (conntrack.c)
        # and mutes the connection after that drain.
        pings(s, 10)
        wait_for(lambda: counts(prom)["rastro_connections_muted_total"] == 1, timeout=5,
                 what="the connection to be muted")
        assert len(map_entries(mutes)) == 1
        before = counts(prom)
        pings(s, 500)
        # The kernel's counters are read by the scrape itself.
        after = counts(prom)
        print(before, after)
        assert after["rastro_events_received_total"] == before["rastro_events_received_total"]
        assert after["rastro_events_muted_total"] - before["rastro_events_muted_total"] == 1000

        # Another connection is examined afresh: its events come until the
        # agent gives up on it too; the first stays muted meanwhile.
        with socket.create_connection(("127.0.0.1", redis_server.port)) as s2:
            pings(s2, 10)
            pings(s, 5)
            mid = counts(prom)
            assert mid["rastro_events_received_total"] - after["rastro_events_received_total"] \
                >= 16  # at least the 8 of each direction it took to give up
            wait_for(lambda: counts(prom)["rastro_connections_muted_total"] == 2, timeout=5,
                     what="the second connection to be muted")
            assert len(map_entries(mutes)) == 2
            wait_for(lambda: counts(prom)["rastro_connections"] == 2, timeout=5,
                     what="both connections tracked")
    # Their ends still reach the agent, which forgets them and their marks.
    wait_for(lambda: counts(prom)["rastro_connections"] == 0, timeout=5,
             what="both connections ended in the agent")
    assert map_entries(mutes) == []
    end = counts(prom)
    assert end["rastro_connections_mute_failed_total"] == 0
    assert metric(self_metrics(prom), "rastro_events_lost_total") == 0
    assert r.snapshot() == []  # a Redis server's side is no request rastro reports


def test_connections_past_the_mutes_map_keep_coming(rastro, redis_server):
    """The mutes map holds a quarter of ebpf.max_connections (1,024 here:
    256). 300 open connections without a known protocol: 256 are muted, the
    other 44 are counted and said once in the log, and their events keep
    coming, ignored as before; nothing is lost."""
    prom = free_port()
    r = rastro(config_for_ports(redis_server.port, name="redis"),
               env={"RASTRO_PROMETHEUS_PORT": str(prom), "RASTRO_MAX_CONNECTIONS": "1024"})
    r.wait_traced(redis_server.proc.pid)
    mutes = map_id_by_name(bpf_objects(r.proc.pid), "mutes")
    socks = [socket.create_connection(("127.0.0.1", redis_server.port)) for _ in range(300)]
    try:
        for s in socks:
            pings(s, 10)
        def settled():
            c = counts(prom)
            return c["rastro_connections_muted_total"] + \
                c["rastro_connections_mute_failed_total"] == 300

        wait_for(settled, timeout=10, what="every connection muted or counted")
        c = counts(prom)
        assert (c["rastro_connections_muted_total"], c["rastro_connections_mute_failed_total"]) \
            == (256, 44)
        assert len(map_entries(mutes)) == 256
        before = counts(prom)
        for s in socks:
            pings(s, 2)
        after = counts(prom)
        assert after["rastro_events_received_total"] - before["rastro_events_received_total"] \
            == 44 * 4
        assert after["rastro_events_muted_total"] - before["rastro_events_muted_total"] == 256 * 4
        assert r.stderr().count("cannot tell the kernel to stop sending a connection's data") == 1
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: counts(prom)["rastro_connections"] == 0, timeout=10,
             what="every connection ended in the agent")
    assert map_entries(mutes) == []
    assert metric(self_metrics(prom), "rastro_events_lost_total") == 0


WEBSOCKET_SERVER = r"""
import socket, sys
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", int(sys.argv[1]))); lst.listen(8)
print("ready", flush=True)
while True:
    c, _ = lst.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    while True:
        frame = c.recv(4096)
        if not frame:
            break
        c.sendall(frame)
    c.close()
"""


@HOOKS
def test_websocket_after_the_upgrade_stops_in_the_kernel(rastro, tmp_path, hooks):
    """HTTP/1's 101 hands the connection to WebSocket, which rastro does not
    parse: the upgrade request is reported (status 101), and the frames
    after it stop in the kernel once the agent has read the 101."""
    port, prom = free_port(), free_port()
    r = rastro(config_for_ports(port, name="ws"),
               env={"RASTRO_EBPF_HOOKS": hooks, "RASTRO_PROMETHEUS_PORT": str(prom)})
    srv = subprocess.Popen([sys.executable, "-c", WEBSOCKET_SERVER, str(port)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline() == "ready\n"
        r.wait_traced(srv.pid)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            assert got.startswith(b"HTTP/1.1 101 ")
            frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # a masked "Hello"

            def echo(n):
                for _ in range(n):
                    s.sendall(frame)
                    assert s.recv(64) == frame

            echo(1)
            wait_for(lambda: counts(prom)["rastro_connections_muted_total"] == 1, timeout=5,
                     what="the connection to be muted after the 101")
            before = counts(prom)
            echo(300)
            after = counts(prom)
            assert after["rastro_events_received_total"] == \
                before["rastro_events_received_total"]
            assert after["rastro_events_muted_total"] - before["rastro_events_muted_total"] == 600
        recs = r.wait_records(1)
        assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"])
                for x in recs] == [("GET", "/chat", 101)]
        wait_for(lambda: counts(prom)["rastro_connections"] == 0, timeout=5,
                 what="the connection ended in the agent")
        assert r.settle() == recs
    finally:
        srv.kill()
        srv.wait()


TLS_NGINX_CONF = """
daemon off;
user root;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{tls} ssl;
        listen 127.0.0.1:{plain};
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{ return 200 "hello\\n"; }}
    }}
}}
"""


def test_https_stops_in_the_kernel_and_http_is_still_traced(rastro, servers, tmp_path):
    """nginx serving HTTPS and HTTP, both ports traced: TLS is not decoded
    (docs/architecture.md, Limits), so a kept-alive TLS connection is muted
    after its first chunks, while the plain requests of the same worker are
    all reported."""
    tls, plain, prom = free_port(), free_port(), free_port()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(TLS_NGINX_CONF.format(dir=tmp_path, tls=tls, plain=plain))
    r = rastro(config_for_ports(tls, plain, name="web"),
               env={"RASTRO_PROMETHEUS_PORT": str(prom)})
    ngx = servers(["nginx", "-c", str(conf), "-p", str(tmp_path)], tls,
                  log=tmp_path / "nginx.out")
    r.wait_traced(ngx.pid)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"

    def https(s, n):
        for _ in range(n):
            s.sendall(req)
            got = b""
            while not got.endswith(b"hello\n"):
                got += s.recv(4096)
            assert got.startswith(b"HTTP/1.1 200 OK")

    with socket.create_connection(("127.0.0.1", tls)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        https(s, 10)
        wait_for(lambda: counts(prom)["rastro_connections_muted_total"] == 1, timeout=5,
                 what="the TLS connection to be muted")
        before = counts(prom)
        https(s, 200)
        after = counts(prom)
        assert after["rastro_events_received_total"] == before["rastro_events_received_total"]
        assert after["rastro_events_muted_total"] - before["rastro_events_muted_total"] >= 400
        with socket.create_connection(("127.0.0.1", plain)) as p:
            for _ in range(20):
                p.sendall(req)
                got = b""
                while not got.endswith(b"hello\n"):
                    got += p.recv(4096)
    recs = r.wait_records(20)
    recs = r.settle()
    assert len(recs) == 20
    assert {(x["url.path"], x["http.response.status_code"], x["server.port"]) for x in recs} \
        == {("/hello", 200, plain)}
    assert counts(prom)["rastro_connections_muted_total"] == 1
