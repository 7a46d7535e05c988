"""The RED metrics of database calls, gRPC calls and HTTP/2 requests, read
from rastro's Prometheus endpoint after known traffic: exact counts per
attribute set."""
import re
import urllib.request

from conftest import free_port, needs_root, config_for_ports
from db_fixtures import mariadb, postgres, redis_server  # noqa: F401
from test_db import dbapp, get  # noqa: F401
from test_http2 import (INDEX, copy_interpreter, curl, grpc_client,  # noqa: F401
                        grpc_server, nghttpd, run_greeter_client, stubs)

pytestmark = needs_root

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out.append((m.group(1), dict(LABEL.findall(m.group(2))), float(m.group(3))))
    return out


def counts(samples, name, keys):
    """{tuple(label values for keys): value} of one metric."""
    out = {}
    for n, labels, v in samples:
        if n == name:
            k = tuple(labels.get(x, "") for x in keys)
            out[k] = out.get(k, 0) + v
    return out


def test_db_client_operation_duration(rastro, dbapp, postgres, mariadb):
    prom = free_port()
    r = rastro(config_for_ports(dbapp.port, name="dbapp"), env={"RASTRO_PROMETHEUS_PORT": str(prom)})
    r.wait_traced(dbapp.pid)
    for path in ["/pg/products", "/pg/product/2", "/pg/product/3", "/pg/fail", "/my/order",
                 "/my/fail"]:
        get(dbapp.port, path)
    r.wait_records(6, lambda x: x["kind"] == "SERVER", timeout=30)
    r.settle()
    got = counts(scrape(prom), "db_client_operation_duration_seconds_count",
                 ("service_name", "db_system_name", "db_operation_name", "db_collection_name",
                  "server_port", "error_type"))
    pg, my = str(postgres.port), str(mariadb.port)
    assert got[("dbapp", "postgresql", "SELECT", "products", pg, "")] == 3
    assert got[("dbapp", "postgresql", "SELECT", "missing_table", pg, "42P01")] == 1
    assert got[("dbapp", "mariadb", "INSERT", "orders", my, "")] == 1
    assert got[("dbapp", "mariadb", "SELECT", "missing_table", my, "1146")] == 1
    # The conventions' buckets for database calls.
    les = {labels["le"] for n, labels, _ in scrape(prom)
           if n == "db_client_operation_duration_seconds_bucket"}
    assert les == {"0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "+Inf"}


def test_rpc_server_call_duration(rastro, servers, tmp_path, stubs):
    srv = grpc_server(servers, tmp_path, stubs)
    prom = free_port()
    r = rastro(config_for_ports(srv.port, name="greeter"), env={"RASTRO_PROMETHEUS_PORT": str(prom)})
    r.wait_traced(srv.pid)
    grpc_client(stubs, srv.port, "hello:ana", "hello:bia", "stream:3:10", "fail:5",
                "fail:13")
    r.wait_records(5, lambda x: x["kind"] == "SERVER", timeout=30)
    r.settle()
    got = counts(scrape(prom), "rpc_server_call_duration_seconds_count",
                 ("rpc_system_name", "rpc_method", "rpc_response_status_code", "error_type"))
    assert got == {
        ("grpc", "rastro.test.Greeter/SayHello", "OK", ""): 2,
        ("grpc", "rastro.test.Greeter/StreamHellos", "OK", ""): 1,
        ("grpc", "rastro.test.Greeter/Fail", "NOT_FOUND", ""): 1,
        ("grpc", "rastro.test.Greeter/Fail", "INTERNAL", "INTERNAL"): 1,
    }


def test_db_client_operation_duration_redis(rastro, dbapp, redis_server):
    """Redis.pm's pipeline (tests/e2e/apps/dbapp.pl, /redis/pipeline) twice:
    the first request also connects and selects database 2; HGET on a string
    fails with WRONGTYPE every time."""
    prom = free_port()
    r = rastro(config_for_ports(dbapp.port, name="dbapp"), env={"RASTRO_PROMETHEUS_PORT": str(prom)})
    r.wait_traced(dbapp.pid)
    for _ in range(2):
        status, body = get(dbapp.port, "/redis/pipeline")
        assert status == 200 and b"WRONGTYPE" in body, body
    r.wait_records(2, lambda x: x["kind"] == "SERVER", timeout=30)
    r.wait_records(11, lambda x: x.get("db.system.name") == "redis", timeout=30)
    r.settle()
    got = counts(scrape(prom), "db_client_operation_duration_seconds_count",
                 ("service_name", "db_system_name", "db_operation_name", "db_collection_name",
                  "server_port", "error_type"))
    rd = str(redis_server.port)
    assert {k: v for k, v in got.items() if k[1] == "redis"} == {
        ("dbapp", "redis", "SELECT", "", rd, ""): 1,
        ("dbapp", "redis", "SET", "", rd, ""): 2,
        ("dbapp", "redis", "INCR", "", rd, ""): 2,
        ("dbapp", "redis", "GET", "", rd, ""): 2,
        ("dbapp", "redis", "HGET", "", rd, "WRONGTYPE"): 2,
        ("dbapp", "redis", "DEL", "", rd, ""): 2,
    }


def test_rpc_client_call_duration(rastro, servers, tmp_path, stubs):
    """The Python gRPC client selected by exe_path (the server is not traced):
    on the client every status but OK is an error."""
    srv = grpc_server(servers, tmp_path, stubs)
    interp = copy_interpreter(tmp_path, "greeter-client-python3")
    prom = free_port()
    r = rastro('log_level: INFO\ndiscovery:\n  instrument:\n'
               '    - exe_path: "*/greeter-client-python3"\n      name: greeter-client\n'
               '      namespace: test\n', env={"RASTRO_PROMETHEUS_PORT": str(prom)})
    run_greeter_client(r, interp, stubs, srv.port, tmp_path,
                       "hello:ana", "hello:bia", "fail:5", "fail:13", "stream:3:10")
    r.wait_records(5, lambda x: x["kind"] == "CLIENT", timeout=30)
    r.settle()
    samples = scrape(prom)
    got = counts(samples, "rpc_client_call_duration_seconds_count",
                 ("service_name", "rpc_system_name", "rpc_method", "rpc_response_status_code",
                  "error_type"))
    assert got == {
        ("greeter-client", "grpc", "rastro.test.Greeter/SayHello", "OK", ""): 2,
        ("greeter-client", "grpc", "rastro.test.Greeter/StreamHellos", "OK", ""): 1,
        ("greeter-client", "grpc", "rastro.test.Greeter/Fail", "NOT_FOUND", "NOT_FOUND"): 1,
        ("greeter-client", "grpc", "rastro.test.Greeter/Fail", "INTERNAL", "INTERNAL"): 1,
    }
    assert counts(samples, "rpc_server_call_duration_seconds_count", ("rpc_method",)) == {}
    # the streaming call lasts from its request to its trailers, 2 x 10 ms apart
    sums = counts(samples, "rpc_client_call_duration_seconds_sum", ("rpc_method",))
    assert 0.02 <= sums[("rastro.test.Greeter/StreamHellos",)] < 1


def test_http2_server_request_duration(rastro, nghttpd):
    """HTTP/2 requests (curl with prior knowledge, nghttpd) are counted in
    the same HTTP server metrics as HTTP/1 ones."""
    prom = free_port()
    r = rastro(config_for_ports(nghttpd.port, name="h2"), env={"RASTRO_PROMETHEUS_PORT": str(prom)})
    r.wait_traced(nghttpd.pid)
    base = f"http://127.0.0.1:{nghttpd.port}"
    assert curl("--http2-prior-knowledge", f"{base}/index.html?a=1") == (200, len(INDEX), "2")
    assert curl("--http2-prior-knowledge", f"{base}/index.html") == (200, len(INDEX), "2")
    assert curl("--http2-prior-knowledge", f"{base}/missing")[0] == 404
    assert curl("--http2-prior-knowledge", "-I", f"{base}/index.html")[0] == 200
    r.wait_records(4, lambda x: x["kind"] == "SERVER", timeout=30)
    r.settle()
    samples = scrape(prom)
    keys = ("service_name", "http_request_method", "http_route", "http_response_status_code",
            "url_scheme", "server_port", "error_type")
    port = str(nghttpd.port)
    assert counts(samples, "http_server_request_duration_seconds_count", keys) == {
        ("h2", "GET", "/index.html", "200", "http", port, ""): 2,
        ("h2", "GET", "/missing", "404", "http", port, ""): 1,
        ("h2", "HEAD", "/index.html", "200", "http", port, ""): 1,
    }
    # the response bodies: two index.html, the 404 page, none for HEAD
    sizes = counts(samples, "http_server_response_body_size_bytes_sum",
                   ("http_request_method", "http_route"))
    assert sizes[("GET", "/index.html")] == 2 * len(INDEX)
    assert sizes[("HEAD", "/index.html")] == 0
