"""rastro's own HTTP/1.1 client for http:// OTLP endpoints, and libcurl loaded
at run time for https:// ones.

A raw socket server answers rastro's span exports with exactly the bytes a
test scripts (framings, interim answers, a server that closes kept-alive
connections, garbage), and records each request as it arrived. The seed's
Perl app is the traced service; each request it serves is one span and, with
a short batch delay, one export request."""
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

from conftest import config_for_ports, needs_root, wait_for

pytestmark = needs_root


def partial_success(message, rejected=1):
    """An ExportTraceServiceResponse with partial_success set, encoded by hand
    (field 1: partial_success {1: rejected_spans, 2: error_message})."""
    msg = message.encode()
    inner = bytes([0x08, rejected, 0x12, len(msg)]) + msg
    return bytes([0x0A, len(inner)]) + inner


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


class ScriptedServer:
    """Answers the n-th request with answers[n] (bytes; CLOSE: close the
    connection without answering); later requests get OK."""
    CLOSE = object()

    def __init__(self, answers, tls=None):
        self.answers = list(answers)
        self.requests = []  # (connection number, head, body)
        self.tls = tls
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c, self.conns), daemon=True).start()

    def _serve(self, c, n):
        if self.tls:
            try:
                c = self.tls.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError):
                c.close()
                return
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
                while len(buf) < length:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.requests.append((n, head.decode(), body))
                    answer = self.answers.pop(0) if self.answers else OK
                if answer is self.CLOSE:
                    return
                c.sendall(answer)
                if answer.startswith(b"HTTP/1.0"):
                    return  # close-delimited

    def stop(self):
        self.sock.close()


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status


def start(rastro, perl_app, endpoint, env=None):
    e = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}
    e.update(env or {})
    r = rastro(config_for_ports(perl_app.port, name="perlapp", namespace="poc",
                                extra="otel_traces_export:\n  schedule_delay: 100ms\n"),
               env=e)
    r.wait_traced(perl_app.pid)
    return r


def stats(r):
    m = re.search(r"traces export: (requests_sent=.*)", r.stderr())
    assert m, r.stderr()
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def mapped_libraries(pid):
    return {line.split()[-1].rsplit("/", 1)[-1] for line in open(f"/proc/{pid}/maps")
            if ".so" in line}


def test_framings_interim_answers_and_kept_alive_connections(rastro, perl_app):
    chunked = partial_success("chunked")
    until_close = partial_success("until-close")
    srv = ScriptedServer([
        OK,  # 1: Content-Length framing; the connection is kept
        # 2: an interim 100 answer, then a chunked body in two chunks with an
        # extension and a trailer
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5;ext=1\r\n" + chunked[:5] + b"\r\n" + b"%x\r\n" % (len(chunked) - 5)
        + chunked[5:] + b"\r\n0\r\nX-Trailer: y\r\n\r\n",
        # 3: HTTP/1.0, body delimited by the connection's end
        b"HTTP/1.0 200 OK\r\n\r\n" + until_close,
        OK,  # 4: on a new connection
        ScriptedServer.CLOSE,  # 5: kept-alive connection closed: sent again, once
        b"NOT HTTP\r\n\r\n",  # 5 again: garbage: a failed attempt, retried
    ])
    # localhost, not an address: the name goes through the asynchronous resolver
    endpoint = f"http://localhost:{srv.port}/v1/traces"
    r = start(rastro, perl_app, endpoint,
              env={"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20t0k,X-Team=a"})
    for i in range(6):
        assert get(perl_app.port, f"/users/{i}") == 200
        wait_for(lambda: len(srv.requests) >= i + 1, timeout=10,
                 what=f"export request {i + 1}")
    wait_for(lambda: len(srv.requests) >= 8, timeout=15, what="the retry of the garbage answer")
    time.sleep(0.5)
    r.stop()
    srv.stop()

    conns = [n for n, _, _ in srv.requests]
    # Exports 1-3 share a connection, which the HTTP/1.0 answer closes; 4 and
    # 5 share the next one, which the server closes instead of answering 5;
    # 5 goes again at once on a third, gets garbage (the connection is
    # dropped), and its retry and export 6 share a fourth.
    assert conns[0] == conns[1] == conns[2] != conns[3]
    assert conns[3] == conns[4] != conns[5] != conns[6] == conns[7]
    assert srv.requests[4][2] == srv.requests[5][2] == srv.requests[6][2]
    for _, head, body in srv.requests:
        lines = head.split("\r\n")
        assert lines[0] == "POST /v1/traces HTTP/1.1"
        h = dict(ln.split(": ", 1) for ln in lines[1:])
        assert h["Host"] == f"localhost:{srv.port}"
        assert h["Content-Type"] == "application/x-protobuf"
        assert int(h["Content-Length"]) == len(body) > 0
        assert h["User-Agent"].startswith("rastro/")
        assert h["Authorization"] == "Bearer t0k" and h["X-Team"] == "a"
    err = r.stderr()
    assert err.count('the backend rejected 1 of 1 spans: "chunked"') == 1, err
    assert err.count('the backend rejected 1 of 1 spans: "until-close"') == 1, err
    assert err.count("is not HTTP/1.x") == 1, err
    st = stats(r)
    # 7 attempts: the resend on a new connection is part of 5's first
    # attempt, which then failed on the garbage answer and was retried
    assert (st["requests_sent"], st["requests_ok"], st["retryable_failures"],
            st["items_dropped"], st["items_rejected"]) == (7, 6, 1, 0, 2), st


def test_plain_http_maps_no_tls_library(rastro, perl_app):
    srv = ScriptedServer([])
    r = start(rastro, perl_app, f"http://127.0.0.1:{srv.port}/v1/traces")
    assert get(perl_app.port, "/") == 200
    wait_for(lambda: srv.requests, timeout=10, what="an export request")
    libs = mapped_libraries(r.proc.pid)
    assert not {x for x in libs if re.match(r"lib(curl|ssl|crypto|gnutls)", x)}, libs
    srv.stop()


def test_unresolvable_host_is_retried_and_logged_once(rastro, perl_app):
    r = start(rastro, perl_app, "http://no-such-host.invalid:4318/v1/traces")
    assert get(perl_app.port, "/") == 200
    wait_for(lambda: "cannot resolve no-such-host.invalid" in r.stderr(), timeout=15,
             what="the resolver's failure")
    time.sleep(2.5)  # a retry or two (backoff from 0.5 s)
    r.stop()
    assert r.stderr().count("cannot resolve no-such-host.invalid") == 1
    st = stats(r)
    assert st["retryable_failures"] >= 2 and st["requests_ok"] == 0, st


def test_credentials_in_the_url_are_refused(rastro, perl_app, tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text(config_for_ports(perl_app.port))
    from conftest import RASTRO
    p = subprocess.run([str(RASTRO), "--config", str(cfg)], capture_output=True, text=True,
                       timeout=30, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
                                        "http://user:secret@127.0.0.1:4318/v1/traces",
                                        "RASTRO_PROMETHEUS_PORT": "0",
                                        "PATH": "/usr/bin:/bin"})
    assert p.returncode != 0
    assert ("otel_traces_export.endpoint http://user:secret@127.0.0.1:4318/v1/traces: "
            "user:password@ in the URL is not supported") in p.stderr, p.stderr


def test_https_loads_libcurl_and_verifies_the_certificate(rastro, perl_app, tmp_path):
    """https goes through libcurl, loaded only then; a self-signed certificate
    is refused (counted, logged once, retried), as it must be."""
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(crt, key)
    srv = ScriptedServer([], tls=tls)
    r = start(rastro, perl_app, f"https://127.0.0.1:{srv.port}/v1/traces")
    assert get(perl_app.port, "/") == 200
    wait_for(lambda: "certificate" in r.stderr(), timeout=15, what="the TLS failure")
    assert any(x.startswith("libcurl.so.4") for x in mapped_libraries(r.proc.pid))
    time.sleep(1.5)
    r.stop()
    srv.stop()
    assert not srv.requests  # nothing was sent to an unverified server
    err = r.stderr()
    assert len(re.findall(r"traces export to https://127\.0\.0\.1:\d+/v1/traces failed: .*"
                          r"certificate", err)) == 1, err
    st = stats(r)
    assert st["retryable_failures"] >= 1 and st["requests_ok"] == 0, st
