"""The RED metrics of database calls and gRPC calls, read from rastro's
Prometheus endpoint after known traffic: exact counts per attribute set."""
import re
import urllib.request

from conftest import free_port, needs_root, config_for_ports
from db_fixtures import mariadb, postgres, redis_server  # noqa: F401
from test_db import dbapp, get  # noqa: F401
from test_http2 import grpc_client, grpc_server, stubs  # noqa: F401

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
