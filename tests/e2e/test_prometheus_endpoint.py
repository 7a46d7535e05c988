"""The Prometheus endpoint's HTTP server itself (src/export/http_server.c),
spoken to with raw sockets: keep-alive and pipelining with chunked bodies,
HTTP/1.0 bodies that end at the close, HEAD, 404, 405, malformed and
oversized requests, the connection limit, and clients that vanish in the
middle of a scrape. A real Prometheus scraping it is in test_metrics.py.

The exposition is made larger than several of the server's 32 KiB pieces
(150 series of the seed's app through routes.unmatched: path), so that a
scrape really is streamed."""
import http.client
import socket
import struct
import time
import urllib.request

import pytest

from conftest import APPS, Rastro, Server, config_for_ports, free_port, needs_root, wait_for, \
    wait_port

pytestmark = needs_root

SERIES = 150
COUNT = "http_server_request_duration_seconds_count"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """(rastro, Prometheus port) with SERIES series of the Perl app."""
    tmp = tmp_path_factory.mktemp("endpoint")
    app_port, prom_port = free_port(), free_port()
    app = Server(["perl", str(APPS / "app.pl"), str(app_port)], app_port, log=tmp / "app.log")
    r = Rastro(tmp, config_for_ports(app_port, name="svc", extra="routes:\n  unmatched: path\n"),
               env={"RASTRO_PROMETHEUS_PORT": str(prom_port)})
    try:
        r.start()
        r.wait_traced(app.pid)
        wait_port(prom_port)
        for i in range(SERIES):
            with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/users/u{i}",
                                        timeout=10) as resp:
                assert resp.status == 200
        wait_for(lambda: scrape_text(prom_port).count(COUNT + "{") == SERIES, timeout=20,
                 what=f"{SERIES} series")
        yield r, prom_port
    finally:
        r.stop()
        app.stop()


def scrape_text(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


# ---- a client that shows the framing

class Conn:
    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def closed(self):
        """Whether the server closed the connection (EOF or reset) with
        nothing more to read."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return not self.buf
                self.buf += data
        except ConnectionResetError:
            return not self.buf

    def response(self, head=False):
        """(status, headers, body, chunk sizes); chunk sizes is None when
        the body is not chunked."""
        status = int(self._line().split(b" ")[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            name, value = line.split(b":", 1)
            headers[name.decode().lower()] = value.strip().decode()
        if head:
            return status, headers, b"", None
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"])), None
        if headers.get("transfer-encoding") == "chunked":
            body, chunks = b"", []
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    assert self._line() == b""  # no trailers
                    return status, headers, body, chunks
                chunks.append(size)
                body += self._take(size)
                assert self._take(2) == b"\r\n"
        # HTTP/1.0: up to the close
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        body, self.buf = self.buf, b""
        return status, headers, body, None

    def close(self):
        self.sock.close()


def series(body):
    """The exposition's series (lines without their values)."""
    return sorted(line.rsplit(" ", 1)[0] for line in body.decode().splitlines()
                  if line and not line.startswith("#"))


def get(path="/metrics", version="1.1", extra=""):
    return f"GET {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode()


# ---- the cases

def test_keep_alive_chunked(endpoint):
    _, port = endpoint
    c = Conn(port)
    try:
        c.send(get())
        status, headers, body1, chunks = c.response()
        assert status == 200
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "connection" not in headers and "content-length" not in headers
        # streamed: several pieces of about 32 KiB (a piece is rendered a
        # whole item at a time, so it may pass 32 KiB by one series)
        assert len(chunks) >= 3, chunks
        assert all(0 < n < 48 * 1024 for n in chunks), chunks
        assert body1.count(COUNT.encode() + b"{") == SERIES
        # the second request on the same connection
        c.send(get())
        status, _, body2, _ = c.response()
        assert status == 200
        assert series(body2) == series(body1)
        # pipelined: three requests in one write, answered in order
        c.send(get() + get("/nope") + get("/metrics?x=1"))
        got = [c.response() for _ in range(3)]
        assert [g[0] for g in got] == [200, 404, 200]
        assert series(got[0][2]) == series(got[2][2]) == series(body1)
        assert got[1][2] == b"not found\n"
        # the client's Connection: close ends it after the response
        c.send(get(extra="Connection: close\r\n"))
        status, headers, body3, _ = c.response()
        assert status == 200 and headers["connection"] == "close"
        assert series(body3) == series(body1)
        assert c.closed()
    finally:
        c.close()


def test_http10_ends_at_close(endpoint):
    _, port = endpoint
    c = Conn(port)
    try:
        c.send(get(version="1.0"))
        status, headers, body, chunks = c.response()
        assert status == 200 and chunks is None
        assert "transfer-encoding" not in headers and "content-length" not in headers
        assert headers["connection"] == "close"
        assert body.count(COUNT.encode() + b"{") == SERIES
        assert body.endswith(b"\n")
        assert series(body) == series(scrape_text(port).encode())
    finally:
        c.close()


def test_head_has_no_body(endpoint):
    _, port = endpoint
    c = Conn(port)
    try:
        c.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _, _ = c.response(head=True)
        assert status == 200
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert headers["transfer-encoding"] == "chunked"
        c.send(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _, _ = c.response(head=True)
        assert (status, headers["content-length"]) == (404, "10")
        # what follows is the next response, not a body
        c.send(get("/nope"))
        assert c.response()[::2] == (404, b"not found\n")
        assert c.buf == b""
    finally:
        c.close()


def test_not_found_and_method_not_allowed(endpoint):
    _, port = endpoint
    c = Conn(port)
    try:
        c.send(get("/"))
        status, headers, body, _ = c.response()
        assert (status, body) == (404, b"not found\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["content-length"] == "10"
        c.send(b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, _ = c.response()
        assert (status, body) == (405, b"method not allowed\n")
        assert headers["allow"] == "GET, HEAD"
        assert headers["content-length"] == "19"
        # still open after both
        c.send(get("/metricsx"))
        assert c.response()[0] == 404
        # a request with a body is answered, then the connection is closed
        # (the server reads no bodies)
        c.send(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, body, _ = c.response()
        assert (status, headers["connection"]) == (405, "close")
        assert c.closed()
    finally:
        c.close()


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /metrics\r\n\r\n",
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"GET  HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
])
def test_malformed_request(endpoint, request_bytes):
    _, port = endpoint
    c = Conn(port)
    try:
        c.send(request_bytes)
        status, headers, body, _ = c.response()
        assert (status, body, headers["connection"]) == (400, b"bad request\n", "close")
        assert c.closed()
    finally:
        c.close()


@pytest.mark.parametrize("size", [9000, 200000])
def test_oversized_head(endpoint, size):
    """More than 8 KiB of head: 431, then the close. The server drains what
    the client still sends, so the close is not a reset that would destroy
    the answer before the client reads it."""
    _, port = endpoint
    c = Conn(port)
    try:
        try:
            c.send(get(extra="X-Big: " + "a" * size + "\r\n"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stops reading past 64 KiB
        status, headers, body, _ = c.response()
        assert (status, headers["connection"]) == (431, "close")
        assert body == b"request header fields too large\n"
        assert c.closed()
    finally:
        c.close()


def test_head_split_across_writes(endpoint):
    """A head that arrives a byte at a time is answered once complete."""
    _, port = endpoint
    c = Conn(port)
    try:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in get("/nope"):
            c.send(bytes([b]))
        assert c.response()[0] == 404
    finally:
        c.close()


@pytest.mark.parametrize("abortive", [False, True])
def test_client_gone_mid_scrape(endpoint, abortive):
    """Clients that read a little of a scrape and leave (a close with unread
    data, or a reset) cost the server nothing: the next scrape is whole."""
    r, port = endpoint
    for _ in range(5):
        c = Conn(port, rcvbuf=4096)
        c.send(get())
        c._take(1000)
        if abortive:
            # close sends a reset
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    text = scrape_text(port)
    assert text.count(COUNT + "{") == SERIES
    assert r.proc.poll() is None


def test_connection_limit(endpoint):
    """At most 64 connections: further ones are accepted and closed at once;
    the first 64 are served."""
    _, port = endpoint
    time.sleep(0.5)  # earlier tests' connections are gone
    conns = [Conn(port) for _ in range(70)]
    try:
        refused = [c for c in conns[64:] if c.closed()]
        assert len(refused) == 6
        for c in conns[:64]:
            c.send(get("/nope"))
        assert [c.response()[0] for c in conns[:64]] == [404] * 64
    finally:
        for c in conns:
            c.close()
    assert scrape_text(port).count(COUNT + "{") == SERIES


def test_clean_exit(endpoint):
    """Last: after all of the above, rastro still serves and stops cleanly
    (with the ASan build, `make asan`, a leak or a memory error shows here)."""
    r, port = endpoint
    assert scrape_text(port).count(COUNT + "{") == SERIES
    assert r.stop() == 0, r.stderr()[-3000:]
    assert "Sanitizer" not in r.stderr(), r.stderr()[-3000:]


# ---- what a scrape counts

def test_a_scrape_counts_every_request_answered_before_it(rastro, perl_app):
    """A scrape brings the registry up to date first: the events the CPUs
    hold back are delivered and the ring buffer is drained, so a request
    answered before the scrape is counted in it, also at a light load, when
    the agent otherwise reads its events up to 500 ms later (its wait grows
    from ebpf.poll_interval). Scrapes come on one kept-alive connection, as
    Prometheus sends them: the build before answered them before reading
    its events (its drain ran after the loop's callbacks), one behind."""
    prom_port = free_port()
    r = rastro(config_for_ports(perl_app.port, name="fresh"),
               env={"RASTRO_PROMETHEUS_PORT": str(prom_port)})
    r.wait_traced(perl_app.pid)
    wait_port(prom_port)
    scraper = Conn(prom_port)
    app = http.client.HTTPConnection("127.0.0.1", perl_app.port, timeout=10)

    def count():
        scraper.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, _ = scraper.response()
        assert status == 200
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                   if line.startswith(COUNT + "{") and 'http_route="/"' in line)

    def request():
        app.request("GET", "/")
        resp = app.getresponse()
        assert resp.status == 200
        resp.read()

    request()
    wait_for(lambda: count() == 1, timeout=10, what="the first request's series")
    seen = []
    for i in range(2, 8):
        time.sleep(0.7)  # idle: the agent's wait grows to 500 ms
        request()
        seen.append(count())
    app.close()
    scraper.close()
    assert seen == [float(i) for i in range(2, 8)]
