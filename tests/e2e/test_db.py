"""Database client calls against real servers (PostgreSQL 15, MariaDB 10.11,
Redis 7 on free ports, see db_fixtures.py) by real clients: a legacy-style
Perl app (Mojolicious + DBI + Redis.pm) and the psql, mariadb and redis-cli
programs. Every test asserts the exact spans: names, attributes, sanitized
query texts, error codes, and their place in the HTTP request's trace."""
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import APPS, config_for_ports, free_port, needs_root, wait_for
from db_fixtures import MARIADB, PSQL, REDIS_CLI, mariadb, postgres, redis_server  # noqa: F401
from otlp_fixtures import otlp_receiver  # noqa: F401  (fixture)

pytestmark = needs_root


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def dbapp(servers, tmp_path, postgres, mariadb, redis_server):
    port = free_port()
    return servers(["perl", str(APPS / "dbapp.pl"), str(port), str(postgres.port),
                    str(mariadb.port), str(redis_server.port)], port,
                   log=tmp_path / "dbapp.log")


def db_spans(recs):
    return [r for r in recs if "db.system.name" in r]


def only(recs, **attrs):
    return [r for r in recs if all(r.get(k) == v for k, v in attrs.items())]


def children_of(server_span, recs):
    return [r for r in db_spans(recs) if r["thread.id"] == server_span["thread.id"]
            and server_span["start_time_unix_nano"] <= r["start_time_unix_nano"]
            and r["end_time_unix_nano"] <= server_span["end_time_unix_nano"]]


def http_and_db(r, port, paths, timeout=20, responses=None):
    """Calls each path in turn (their responses go to `responses`); returns
    {path: [(server span, [db spans in it]), ...]}. Every db span of the app
    must lie inside one of the server spans."""
    for p in paths:
        resp = get(port, p)
        if responses is not None:
            responses.append(resp)
    r.wait_records(len(paths), lambda x: x["kind"] == "SERVER", timeout=timeout)
    recs = r.settle()
    out = {}
    for p, srv in zip(paths, [x for x in recs if x["kind"] == "SERVER"]):
        assert srv["url.path"] == p
        out.setdefault(p, []).append((srv, children_of(srv, recs)))
    placed = sum(len(kids) for runs in out.values() for _, kids in runs)
    assert placed == len(db_spans(recs)), db_spans(recs)
    return out


def assert_child(span, server):
    """The db span is the child of the HTTP server span its thread served."""
    assert span["kind"] == "CLIENT"
    assert span["trace_id"] == server["trace_id"], (span["name"], server["name"])
    assert span["parent_span_id"] == server["span_id"], (span["name"], server["name"])
    assert span["process.pid"] == server["process.pid"]
    assert span["end_time_unix_nano"] >= span["start_time_unix_nano"]


def assert_db(span, system, name, query, port, namespace=None, op=None, coll=None,
              status=None):
    assert span["name"] == name
    assert span["db.system.name"] == system
    assert span.get("db.query.text") == query
    assert span.get("db.operation.name") == op
    assert span.get("db.collection.name") == coll
    assert span.get("db.namespace") == namespace
    assert span["server.address"] == "127.0.0.1"
    assert span["server.port"] == port
    assert span.get("db.response.status_code") == status
    assert span.get("error.type") == status


def test_perl_app_postgresql(rastro, dbapp, postgres):
    r = rastro(config_for_ports(dbapp.port, name="dbapp"))
    r.wait_traced(dbapp.pid)
    paths = ["/pg/products", "/pg/product/2", "/pg/product/3", "/pg/order", "/pg/fail",
             "/pg/early"]
    got = http_and_db(r, dbapp.port, paths)
    want = {
        "/pg/products": ("SELECT products", "SELECT",
                         "SELECT id, name FROM products WHERE name = ? OR price > ? ORDER BY id",
                         "products", None),
        # a prepared statement: its text comes from the Parse of the first
        # request, also in the second, which only binds and executes it
        "/pg/product/2": ("SELECT products", "SELECT",
                          "SELECT name, price FROM products WHERE id = $1", "products", None),
        "/pg/product/3": ("SELECT products", "SELECT",
                          "SELECT name, price FROM products WHERE id = $1", "products", None),
        "/pg/order": ("INSERT orders", "INSERT",
                      "INSERT INTO orders (product_id, qty) VALUES ($1, $2)", "orders", None),
        "/pg/fail": ("SELECT missing_table", "SELECT", "SELECT * FROM missing_table",
                     "missing_table", "42P01"),
    }
    for path, (name, op, query, coll, status) in want.items():
        ((srv, kids),) = got[path]
        assert len(kids) == 1, (path, kids)
        assert_db(kids[0], "postgresql", name, query, postgres.port, namespace="shop", op=op,
                  coll=coll, status=status)
        assert_child(kids[0], srv)
    # A connection opened before rastro started: found from its messages, no
    # startup seen, so no database name.
    ((srv, kids),) = got["/pg/early"]
    assert len(kids) == 1
    assert_db(kids[0], "postgresql", "SELECT products", "SELECT id FROM products WHERE id = ?",
              postgres.port, op="SELECT", coll="products")
    assert_child(kids[0], srv)
    assert got["/pg/fail"][0][0]["http.response.status_code"] == 500


def test_perl_app_mariadb(rastro, dbapp, mariadb):
    r = rastro(config_for_ports(dbapp.port, name="dbapp"))
    r.wait_traced(dbapp.pid)
    paths = ["/my/products", "/my/product/2", "/my/product/3", "/my/order", "/my/fail"]
    got = http_and_db(r, dbapp.port, paths)
    # DBD::MariaDB sets the connection's character set when it connects (on
    # first use, inside the first request of each handle).
    connect = ["SET NAMES ?", "SET character_set_server = ?", "SET collation_connection = ?",
               "SET collation_server = ?"]
    want = {
        # client-side placeholders: the values travel in the COM_QUERY text
        "/my/products": ("SELECT products", "SELECT",
                         "SELECT id, name FROM products WHERE name = ? OR price > ? ORDER BY id",
                         "products", None, connect),
        # server-side prepared statements: COM_STMT_EXECUTE, text of the prepare
        "/my/product/2": ("SELECT products", "SELECT",
                          "SELECT name, price FROM products WHERE id = ?", "products", None,
                          connect),
        "/my/product/3": ("SELECT products", "SELECT",
                          "SELECT name, price FROM products WHERE id = ?", "products", None, []),
        "/my/order": ("INSERT orders", "INSERT",
                      "INSERT INTO orders (product_id, qty) VALUES (?, ?)", "orders", None, []),
        "/my/fail": ("SELECT missing_table", "SELECT", "SELECT * FROM missing_table",
                     "missing_table", "1146", []),
    }
    for path, (name, op, query, coll, status, before) in want.items():
        ((srv, kids),) = got[path]
        assert [k.get("db.query.text") for k in kids] == before + [query], path
        for k in kids[:-1]:
            assert_db(k, "mariadb", "SET", k["db.query.text"], mariadb.port, namespace="shop",
                      op="SET")
            assert_child(k, srv)
        assert_db(kids[-1], "mariadb", name, query, mariadb.port, namespace="shop", op=op,
                  coll=coll, status=status)
        assert_child(kids[-1], srv)


def test_perl_app_redis_pipeline(rastro, dbapp, redis_server):
    r = rastro(config_for_ports(dbapp.port, name="dbapp"))
    r.wait_traced(dbapp.pid)
    responses = []
    got = http_and_db(r, dbapp.port, ["/redis/pipeline"] * 2, responses=responses)
    assert responses == [(200, b'["OK","1","hello","error: WRONGTYPE Operation against a key '
                               b'holding the wrong kind of value","1"]')] * 2
    runs = got["/redis/pipeline"]
    assert len(runs) == 2
    pipeline = [("SET", "SET ? ?"), ("INCR", "INCR ?"), ("GET", "GET ?"), ("HGET", "HGET ? ?"),
                ("DEL", "DEL ?")]
    # The first request connects and selects database 2 first.
    for (srv, kids), first in zip(runs, (True, False)):
        want = ([("SELECT", "SELECT ?")] if first else []) + pipeline
        assert [(k["name"], k["db.query.text"]) for k in kids] == want
        for k, (op, _) in zip(kids, want):
            assert k["db.system.name"] == "redis"
            assert k["db.operation.name"] == op
            assert k["db.namespace"] == "2"
            assert k["server.port"] == redis_server.port
            assert "db.collection.name" not in k
            assert k.get("error.type") == ("WRONGTYPE" if op == "HGET" else None)
            assert k.get("db.response.status_code") == ("WRONGTYPE" if op == "HGET" else None)
            assert_child(k, srv)
        # Redis.pm reads whatever replies are there before each write: how many
        # commands are in flight at once varies; the replies come in order
        piped = kids[-5:]
        for a, b in zip(piped, piped[1:]):
            assert a["start_time_unix_nano"] <= b["start_time_unix_nano"]
            assert a["end_time_unix_nano"] <= b["end_time_unix_nano"]
    # The values never show.
    assert "hello" not in str(db_spans(r.snapshot()))


PIPELINE_CLIENT = r"""
import socket, sys
lst = socket.socket(); lst.bind(("127.0.0.1", int(sys.argv[1]))); lst.listen(1)
print("ready", flush=True); sys.stdin.readline()
cmds = [[b"SELECT", b"4"], [b"RPUSH", b"jobs", b"a", b"b"], [b"LPOP", b"jobs"],
        [b"HGET", b"jobs", b"x"], [b"LLEN", b"jobs"]]
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    s.sendall(b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                      for a in c) for c in cmds))
    buf = b""
    while buf.count(b"\r\n") < 5:
        buf += s.recv(4096)
    print(buf.decode(), flush=True)
"""


def test_pipeline_in_one_write(rastro, redis_server):
    """Five commands in one write before any reply is read: five spans, each
    with its own reply (the fourth fails), all starting with that write."""
    port = free_port()
    r = rastro(config_for_ports(port, name="piper"))
    p = subprocess.Popen([sys.executable, "-c", PIPELINE_CLIENT, str(port),
                          str(redis_server.port)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        r.wait_traced(p.pid)
        out, _ = p.communicate("go\n", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # text mode reads each CRLF as a newline
    assert out.startswith("+OK\n:2\n$1\na\n-WRONGTYPE")
    spans = r.wait_records(5, lambda x: x["service.name"] == "piper")
    spans = r.settle(lambda x: x["service.name"] == "piper")
    assert [(s["name"], s["db.query.text"], s["db.namespace"], s.get("error.type"))
            for s in spans] == [
        ("SELECT", "SELECT ?", "4", None), ("RPUSH", "RPUSH ? ? ?", "4", None),
        ("LPOP", "LPOP ?", "4", None), ("HGET", "HGET ? ?", "4", "WRONGTYPE"),
        ("LLEN", "LLEN ?", "4", None)]
    assert len({s["start_time_unix_nano"] for s in spans}) == 1  # one write
    assert all(s["thread.id"] == p.pid for s in spans)


def test_large_result_and_large_query_keep_pairing(rastro, dbapp, postgres, mariadb):
    """100k rows come back in many reads of which only the first bytes are
    copied; a 1 MiB query leaves likewise. The queries after them are still
    paired with their own replies."""
    r = rastro(config_for_ports(dbapp.port, name="dbapp"))
    r.wait_traced(dbapp.pid)
    paths = ["/pg/big", "/pg/products", "/pg/bigquery", "/pg/products",
             "/my/big", "/my/products", "/my/bigquery", "/my/products"]
    for p in paths:
        status, body = get(dbapp.port, p)
        assert status == 200
        if p.endswith("/big"):
            assert body == b"100000"
        if p.endswith("/bigquery"):
            assert body == b"3"
    r.wait_records(len(paths), lambda x: x["kind"] == "SERVER", timeout=30)
    recs = r.settle()
    servers = [x for x in recs if x["kind"] == "SERVER"]
    assert [s["url.path"] for s in servers] == paths
    products = "SELECT id, name FROM products WHERE name = ? OR price > ? ORDER BY id"
    for srv in servers:
        kids = [k for k in children_of(srv, recs) if k["db.operation.name"] != "SET"]
        assert len(kids) == 1, (srv["url.path"], kids)
        (k,) = kids
        assert_child(k, srv)
        if srv["url.path"].endswith("/big"):
            assert k["db.query.text"] == "SELECT id, payload FROM big ORDER BY id"
            assert k["name"] == "SELECT big"
            # the span covers the whole transfer, far longer than a small query
            assert k["duration_ns"] > 10 * 1e6
        elif srv["url.path"].endswith("/bigquery"):
            assert k["db.query.text"] == "SELECT count(*) FROM products WHERE name <> ?"
        else:
            assert k["db.query.text"] == products
        assert k.get("error.type") is None
    r.stop()
    assert "parse_errors=0" in r.stderr()


def run_client(r, argv, script_lines, reconnect):
    """Starts a client reading commands from a pipe, waits until rastro (or
    each of a list of them) traces it, has it reconnect (so the new
    connection's handshake is seen), then feeds it the script. Returns its
    output."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        for each in r if isinstance(r, list) else [r]:
            each.wait_traced(p.pid)
        time.sleep(0.3)
        out, _ = p.communicate(reconnect + "".join(line + "\n" for line in script_lines),
                               timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out


def client_config(pattern, name):
    return f"log_level: INFO\ndiscovery:\n  instrument:\n    - exe_path: \"{pattern}\"\n" \
           f"      name: {name}\n"


def test_psql(rastro, postgres):
    r = rastro(client_config("*/psql", "psql"))
    out = run_client(r, [str(PSQL), "-X", "-h", "127.0.0.1", "-p", str(postgres.port),
                         "-U", "postgres", "-d", "postgres"],
                     ["SELECT name FROM products WHERE id = 2;",
                      "SELECT * FROM nope;",
                      "INSERT INTO orders (product_id, qty) VALUES (3, 1);"],
                     reconnect="\\connect shop\n")
    assert "pen" in out and 'relation "nope" does not exist' in out
    spans = r.wait_records(3, lambda x: x["service.name"] == "psql")
    spans = r.settle(lambda x: x["service.name"] == "psql")
    assert len(spans) == 3, spans
    # psql asks for TLS first (sslmode=prefer); the server says no.
    assert_db(spans[0], "postgresql", "SELECT products", "SELECT name FROM products WHERE id = ?;",
              postgres.port, namespace="shop", op="SELECT", coll="products")
    assert_db(spans[1], "postgresql", "SELECT nope", "SELECT * FROM nope;", postgres.port,
              namespace="shop", op="SELECT", coll="nope", status="42P01")
    assert_db(spans[2], "postgresql", "INSERT orders",
              "INSERT INTO orders (product_id, qty) VALUES (?, ?);", postgres.port,
              namespace="shop", op="INSERT", coll="orders")
    for s in spans:
        assert s["parent_span_id"] == ""  # psql serves no request: roots


def test_mariadb_client(rastro, mariadb):
    r = rastro(client_config("*/mariadb", "mariadb-cli"))
    out = run_client(r, [MARIADB, "--no-defaults", "--force", "-h", "127.0.0.1", "-P",
                         str(mariadb.port), "-uapp", "-psecret", "mysql"],
                     ["SELECT name FROM products WHERE id = 2;",
                      "SELECT * FROM nope;",
                      "UPDATE products SET price = 1.25 WHERE id = 2;"],
                     reconnect="connect shop 127.0.0.1;\n")
    assert "pen" in out and "1146" in out
    spans = r.wait_records(3, lambda x: x["service.name"] == "mariadb-cli")
    spans = r.settle(lambda x: x["service.name"] == "mariadb-cli")
    assert [s["db.query.text"] for s in spans] == [
        "SELECT name FROM products WHERE id = ?", "SELECT * FROM nope",
        "UPDATE products SET price = ? WHERE id = ?"]
    assert_db(spans[0], "mariadb", "SELECT products", "SELECT name FROM products WHERE id = ?",
              mariadb.port, namespace="shop", op="SELECT", coll="products")
    assert_db(spans[1], "mariadb", "SELECT nope", "SELECT * FROM nope", mariadb.port,
              namespace="shop", op="SELECT", coll="nope", status="1146")
    assert_db(spans[2], "mariadb", "UPDATE products", "UPDATE products SET price = ? WHERE id = ?",
              mariadb.port, namespace="shop", op="UPDATE", coll="products")


def test_redis_cli(rastro, redis_server):
    r = rastro(client_config("*/redis-cli", "redis-cli"))
    out = run_client(r, [REDIS_CLI, "-p", str(redis_server.port)],
                     ["SET user:1 alice", "GET user:1", "INCR user:1", "SELECT 3", "GET user:1"],
                     reconnect=f"connect 127.0.0.1 {redis_server.port}\n")
    assert "alice" in out and "ERR value is not an integer" in out
    spans = r.wait_records(5, lambda x: x["service.name"] == "redis-cli")
    spans = r.settle(lambda x: x["service.name"] == "redis-cli")
    spans = [s for s in spans if s["db.operation.name"] != "COMMAND"]  # the cli's own help
    assert [(s["name"], s["db.query.text"], s["db.namespace"], s.get("error.type"))
            for s in spans] == [
        ("SET", "SET ? ?", "0", None), ("GET", "GET ?", "0", None),
        ("INCR", "INCR ?", "0", "ERR"), ("SELECT", "SELECT ?", "3", None),
        ("GET", "GET ?", "3", None)]
    assert all(s["server.port"] == redis_server.port for s in spans)
    assert "alice" not in str(spans)


def test_server_error_message(rastro, postgres, mariadb, redis_server, otlp_receiver):
    """A failed call's span status says what the server said when literals
    are kept (attributes.keep_db_literals: the message may quote values), in
    the JSON printer and the OTLP span; otherwise its error type."""
    cfg = ("log_level: INFO\ndiscovery:\n  instrument:\n"
           + "".join(f"    - exe_path: \"*/{exe}\"\n      name: {exe}\n"
                     for exe in ("psql", "mariadb", "redis-cli"))
           + "otel_traces_export:\n  schedule_delay: 100ms\n")
    kept = rastro(cfg + "attributes:\n  keep_db_literals: true\n",
                  env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url})
    plain = rastro(cfg)
    text = rastro(cfg + "attributes:\n  keep_db_literals: true\n", printer="text")
    both = [kept, plain, text]
    out = run_client(both, [str(PSQL), "-X", "-h", "127.0.0.1", "-p", str(postgres.port),
                            "-U", "postgres", "-d", "postgres"],
                     ["SELECT * FROM nope;"], reconnect="\\connect shop\n")
    assert 'relation "nope" does not exist' in out
    out = run_client(both, [MARIADB, "--no-defaults", "--force", "-h", "127.0.0.1", "-P",
                            str(mariadb.port), "-uapp", "-psecret", "mysql"],
                     ["SELECT * FROM nope;"], reconnect="connect shop 127.0.0.1;\n")
    assert "Table 'shop.nope' doesn't exist" in out
    out = run_client(both, [REDIS_CLI, "-p", str(redis_server.port)],
                     ["SET user:1 alice", "INCR user:1"],
                     reconnect=f"connect 127.0.0.1 {redis_server.port}\n")
    assert "ERR value is not an integer or out of range" in out

    def failed(r):
        r.wait_records(3, lambda x: "status.code" in x, timeout=20)
        return sorted((x["service.name"], x["error.type"], x["status.code"], x["status.message"])
                      for x in r.settle() if "status.code" in x)
    words = [("mariadb", "1146", "ERROR", "42S02 Table 'shop.nope' doesn't exist"),
             ("psql", "42P01", "ERROR", 'relation "nope" does not exist'),
             ("redis-cli", "ERR", "ERROR", "ERR value is not an integer or out of range")]
    assert failed(kept) == words
    assert failed(plain) == [(n, e, c, e) for n, e, c, _ in words]
    # The same in the OTLP spans, as the official definitions decode them.
    spans = otlp_receiver.wait_spans(3, pred=lambda s: "status" in s, timeout=20)
    assert sorted((s["_resource"]["service.name"], s["status"]["code"], s["status"]["message"])
                  for s in spans if "status" in s) == [
        (n, "STATUS_CODE_ERROR", m) for n, _, _, m in words]
    # The text printer: the message, quoted, after the error type.
    wait_for(lambda: len([x for x in text.lines if " error=" in x]) >= 3, timeout=20,
             what="the text printer's failed spans")
    assert sorted(x[x.index(" error="):x.index(" [")] for x in text.lines if " error=" in x) == \
        sorted(f' error={e} "{m}"' for _, e, _, m in words)
    # Spans that did not fail carry no status.
    assert not [x for x in kept.snapshot() if "status.code" in x and "error.type" not in x]


QUERIES = ["SELECT name FROM users WHERE id = 42",
           "UPDATE users SET name = 'bob' WHERE id = 42",
           "PING not sql",
           "DELETE FROM sessions WHERE expires < 1700000000"]


def run_sqlwire(rastro, servers, tmp_path, config_extra="", env=None):
    srv_port = free_port()
    servers([sys.executable, str(APPS / "sqlwire.py"), "server", str(srv_port)], srv_port,
            log=tmp_path / "sqlwire.log")
    cli_port = free_port()  # chosen once the server holds its port
    r = rastro(config_for_ports(cli_port, name="sqlclient", extra=config_extra), env=env)
    cli = subprocess.Popen([sys.executable, str(APPS / "sqlwire.py"), "client", str(cli_port),
                            str(srv_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    try:
        assert cli.stdout.readline() == "ready\n"
        r.wait_traced(cli.pid)
        out, _ = cli.communicate("go\n" + "".join(q + "\n" for q in QUERIES), timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert out.split("\n")[:4] == [f"OK {len(q)}" for q in QUERIES]
    return r


@pytest.mark.parametrize("how", ["ebpf", "seed", "env", "env_rastro"])
def test_heuristic_sql_on(rastro, servers, tmp_path, how):
    extra = {"ebpf": "ebpf:\n  heuristic_sql_detect: true\n",
             "seed": "attributes:\n  heuristic_sql_detect: true\n", "env": "",
             "env_rastro": ""}[how]
    env = {"env": {"BEYLA_HEURISTIC_SQL_DETECT": "true"},
           "env_rastro": {"RASTRO_HEURISTIC_SQL_DETECT": "true"}}.get(how)
    r = run_sqlwire(rastro, servers, tmp_path, extra, env)
    spans = r.wait_records(3, lambda x: x["service.name"] == "sqlclient")
    spans = r.settle(lambda x: x["service.name"] == "sqlclient")
    assert [(s["name"], s["db.query.text"]) for s in spans] == [
        ("SELECT users", "SELECT name FROM users WHERE id = ?"),
        ("UPDATE users", "UPDATE users SET name = ? WHERE id = ?"),
        ("DELETE sessions", "DELETE FROM sessions WHERE expires < ?")]
    for s in spans:
        assert s["db.system.name"] == "other_sql"
        assert s["kind"] == "CLIENT"
        assert s["server.address"] == "127.0.0.1"
        assert s["end_time_unix_nano"] > s["start_time_unix_nano"]
        assert "error.type" not in s


def test_heuristic_sql_off(rastro, servers, tmp_path):
    r = run_sqlwire(rastro, servers, tmp_path)
    # the same exchange with the switch on makes spans (above); off: nothing
    time.sleep(1.5)
    assert r.settle(lambda x: x["service.name"] == "sqlclient") == []
