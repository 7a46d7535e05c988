"""Hostile and malformed input. A hostile party controls either what reaches
a traced server (requests) or what a traced client reads back (replies of a
malicious or broken server). Both are played here against one rastro:

  - hostile clients send random bytes, truncated and oversized HTTP heads,
    invalid methods, bogus chunk sizes, HTTP/2 garbage and database wire
    messages to the seed's Perl app (a traced server);
  - a traced client (this file run as a program, `peer` mode) sends proper
    HTTP, PostgreSQL, MySQL and Redis requests to fake servers that answer
    with random bytes, truncated or oversized frames and lying length fields.

rastro must not crash or hang (a normal request afterwards is reported, the
process exits 0, and an ASan build reports nothing), and must report exactly
the records listed below, which docs/security.md documents."""
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

if __name__ != "__main__":
    from conftest import config_for_ports, free_port, needs_root
    from test_reliability_helpers import metric, self_metrics

    pytestmark = needs_root

SEED = 20261126


def rnd(n, salt):
    return random.Random(SEED + salt).randbytes(n)


# ---- what hostile clients send to a traced HTTP server

def chunked(size_line):
    return (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size_line + b"\r\nabc\r\n0\r\n\r\n")


SERVER_CASES = [
    # name, bytes sent (then the client reads until close or 1 s and closes)
    ("random-4k", rnd(4096, 1)),
    ("random-64", rnd(64, 2)),
    ("nul-bytes", b"\0" * 512),
    ("truncated-request-line", b"GET /trunc"),
    ("truncated-head", b"GET /trunc-head HTTP/1.1\r\nHost: x\r\nX-A: "),
    ("oversized-head", b"GET /oversized HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000
     + b"\r\n\r\n"),
    ("oversized-path", b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("invalid-method", b"G@T /badmethod HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("unknown-method", b"FROB /frob HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("no-version", b"GET /noversion\r\n\r\n"),
    ("bad-version", b"GET /badversion HTTP/9.Z\r\nHost: x\r\n\r\n"),
    ("chunk-not-hex", chunked(b"ZZZ")),
    ("chunk-huge", chunked(b"FFFFFFFFFFFFFFFFFFFF")),
    ("chunk-negative", chunked(b"-5")),
    ("content-length-lie", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\nab"),
    ("content-length-bogus", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    ("h2-preface-garbage", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rnd(512, 3)),
    ("pg-startup-huge-len", struct.pack(">ii", 0x7fffffff, 196608) + b"user\0x\0\0"),
    ("pg-query-short-len", b"Q\x00\x00\x00\x02SELECT 1\0"),
    ("mysql-max-packet", b"\xff\xff\xff\x00" + rnd(300, 4)),
    ("mysql-com-query-trunc", b"\x40\x00\x00\x00\x03SELECT"),
    ("redis-huge-array", b"*999999999\r\n$-5\r\n"),
    ("redis-bulk-lie", b"*2\r\n$3\r\nGET\r\n$100000\r\nab\r\n"),
    ("redis-inline-garbage", b"GET \xff\xfe\r\n" * 20),
]

# What rastro reports for them: (method, url.path, status or error.type).
# Only requests whose head parses as HTTP/1 (a method token, a path, an
# HTTP/1.x version) are reported, with what the server answered; a body that
# never ends as announced ends at the close, without a response. Paths are cut
# at http.max_path_length (512). See docs/security.md.
SERVER_EXPECTED = sorted([
    ("GET", "/oversized", 404),          # the head is reported from its request line
    ("GET", "/" + "p" * 511, 200),       # url.path truncated
    ("_OTHER", "/frob", 404),            # a well-formed unknown method
    ("POST", "/echo", "no_response"),    # chunk-not-hex: the app closes
    ("POST", "/echo", "no_response"),    # chunk-huge
    ("POST", "/echo", "no_response"),    # chunk-negative
    ("POST", "/echo", "no_response"),    # content-length-lie
    # not reported: random bytes, NULs, truncated heads, G@T, no or a bad
    # version, HTTP/2 garbage, database messages, and Content-Length: -1
    # (answered by the app, but not a valid HTTP/1.1 head: a parse error)
])


def hostile_client(port, payload, read_timeout=1.0):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(payload)
        except OSError:
            return b""  # the server closed first: what it read counts
        s.settimeout(read_timeout)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data


# ---- what hostile servers answer to a traced client

def frame_pg(kind, body):
    return kind + struct.pack(">i", len(body) + 4) + body


REPLY_CASES = {
    # protocol: [(name, reply bytes)]; the traced client sends a proper
    # request first (REQUESTS below), then reads whatever comes.
    "http": [
        ("random", rnd(2048, 10)),
        ("truncated-status", b"HTTP/1.1 20"),
        ("bad-status", b"HTTP/1.1 2000000 OK\r\nContent-Length: 0\r\n\r\n"),
        ("chunk-huge", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"FFFFFFFFFFFFFFFFFFFF\r\nab"),
        ("length-lie", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\nabc"),
        ("oversized-head", b"HTTP/1.1 200 OK\r\nX-Pad: " + b"b" * 20000 + b"\r\n\r\n"),
    ],
    "postgres": [
        ("random", rnd(2048, 11)),
        ("huge-length", b"R" + struct.pack(">i", 0x7ffffff0) + b"\0\0\0\0"),
        ("negative-length", b"E" + struct.pack(">i", -20) + b"SERROR\0"),
        ("error-no-terminator", frame_pg(b"E", b"SERROR\0C" + b"9" * 5000)),
    ],
    "mysql": [
        ("random", rnd(2048, 12)),
        ("greeting-truncated", b"\x4a\x00\x00\x00\x0a5.5.5-10"),
        ("greeting-garbage", b"\x30\x00\x00\x00\x0a" + rnd(0x2f, 13)),
        ("max-packet", b"\xff\xff\xff\x00" + rnd(500, 14)),
    ],
    "redis": [
        ("random", rnd(2048, 15)),
        ("huge-bulk", b"$2147483647\r\nab"),
        ("huge-array", b"*2147483647\r\n:1\r\n"),
        ("bad-type", b"~\r\n\x00\x01\r\n"),
        ("deep-nesting", b"*1\r\n" * 5000 + b":1\r\n"),
    ],
}

PG_STARTUP = struct.pack(">ii", 41, 196608) + b"user\0postgres\0database\0shop\0\0"
PG_STARTUP = struct.pack(">i", len(PG_STARTUP)) + PG_STARTUP[4:]
MYSQL_FIRST_READ = True  # MySQL servers speak first: the client only reads

REQUESTS = {
    "http": b"GET /from-client HTTP/1.1\r\nHost: x\r\n\r\n",
    "postgres": PG_STARTUP + frame_pg(b"Q", b"SELECT 1\0"),
    "redis": b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
    "mysql": b"",
}


def fake_server(reply, done):
    """Accepts one connection per reply: reads what comes (briefly), sends
    the reply, closes. Returns the listening port."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]

    def serve():
        with ls:
            for _ in range(len(reply)):
                c, _ = ls.accept()
                with c:
                    c.settimeout(0.3)
                    try:
                        c.recv(65536)
                    except OSError:
                        pass
                    try:
                        c.sendall(reply.pop(0))
                    except OSError:
                        pass
                    time.sleep(0.05)
        done.set()
    threading.Thread(target=serve, daemon=True).start()
    return port


def peer_main(listen_port, proto, server_port, n):
    """The traced client: listens on listen_port (only so that rastro selects
    it by port), prints "ready", waits for a line, then makes n connections
    to server_port: sends the protocol's request, reads until close."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(1)
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", server_port), timeout=5) as s:
            req = REQUESTS[proto]
            if proto == "mysql":
                time.sleep(0.05)
            if req:
                s.sendall(req)
            s.settimeout(2)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    print("done", flush=True)


# A traced client's request is reported once whatever comes back; the reply
# can only decide its status. PostgreSQL queries sent before the server
# authenticated the client, and MySQL sessions whose greeting does not
# parse, are not reported at all.
REPLY_EXPECTED = {
    # in the order of REPLY_CASES: (status code or None, error.type or None)
    "http": [(None, "no_response"), (None, "no_response"), (None, "no_response"),
             (200, None), (200, None), (200, None)],
    "postgres": [],
    "mysql": [],
    "redis": [(None, None), (None, "no_response"), (None, "no_response"), (None, None),
              (None, None)],
}


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status


if __name__ != "__main__":
    def test_hostile_input(rastro, perl_app, tmp_path):
        peer_port = free_port()
        prom = free_port()
        r = rastro(config_for_ports(perl_app.port, peer_port, name="target"),
                   env={"RASTRO_PROMETHEUS_PORT": str(prom)})
        r.wait_traced(perl_app.pid)

        # hostile clients against the traced server
        for name, payload in SERVER_CASES:
            hostile_client(perl_app.port, payload)
            assert r.proc.poll() is None, f"rastro died after {name}"

        # a traced client against hostile servers, one protocol at a time
        client_recs = {}
        for proto, cases in REPLY_CASES.items():
            done = threading.Event()
            sport = fake_server([c[1] for c in cases], done)
            p = subprocess.Popen([sys.executable, __file__, "peer", str(peer_port), proto,
                                  str(sport), str(len(cases))], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            try:
                assert p.stdout.readline() == "ready\n"
                r.wait_traced(p.pid)
                p.stdin.write("go\n")
                p.stdin.flush()
                assert p.stdout.readline() == "done\n"
                assert p.wait(30) == 0
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            assert done.wait(10)
            assert r.proc.poll() is None, f"rastro died after the {proto} replies"
            client_recs[proto] = sport

        # not hung: a normal request is reported at once
        assert get(perl_app.port, "/users/sentinel") == 200
        r.wait_records(1, lambda x: x.get("url.path") == "/users/sentinel", timeout=5)
        recs = r.settle()

        server = [x for x in recs if x["kind"] == "SERVER" and x["url.path"] != "/users/sentinel"]
        assert sorted((x["http.request.method"], x["url.path"],
                       x.get("http.response.status_code", x.get("error.type")))
                      for x in server) == SERVER_EXPECTED
        for proto, sport in client_recs.items():
            got = sorted((x for x in recs if x["kind"] == "CLIENT" and x["server.port"] == sport),
                         key=lambda x: x["start_time_unix_nano"])
            want = REPLY_EXPECTED[proto]
            status_key = ("http.response.status_code" if proto == "http"
                          else "db.response.status_code")
            assert [(x.get(status_key), x.get("error.type")) for x in got] == want, proto
            if proto == "redis":
                assert {x["db.query.text"] for x in got} == {"GET ?"}
        s = self_metrics(prom)
        assert metric(s, "rastro_events_lost_total", source="kernel") == 0
        assert r.stop() == 0


if __name__ == "__main__":
    if sys.argv[1] == "peer":
        peer_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    sys.exit(0)
