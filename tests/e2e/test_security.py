"""Security: least privilege (rastro runs under capsh with exactly the four
documented capabilities, needs each of them, and keeps only two once
started), data minimisation (a planted secret never leaves rastro), nothing
it creates is reachable by unprivileged users, and the Prometheus endpoint
listens where it is told. See docs/security.md."""
import os
import secrets
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import (APPS, config_for_ports, free_port, needs_root, wait_for, wait_port,
                      world_readable)
from db_fixtures import PSQL, REDIS_CLI, postgres, redis_server  # noqa: F401  (fixtures)
from otlp_fixtures import otlp_receiver  # noqa: F401  (fixture)

pytestmark = needs_root

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
# Capability numbers (linux/capability.h).
CAP = {"cap_dac_read_search": 2, "cap_setpcap": 8, "cap_sys_ptrace": 19, "cap_sys_admin": 21,
       "cap_perfmon": 38, "cap_bpf": 39}
DOCUMENTED = ["cap_bpf", "cap_perfmon", "cap_sys_ptrace", "cap_dac_read_search"]
KEPT = ["cap_sys_ptrace", "cap_dac_read_search"]


def all_caps():
    out = subprocess.run(["capsh", "--decode=0x1ffffffffff"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return out.split("=", 1)[1].split(",")


def capsh_only(keep):
    """A command prefix that runs its argv with only `keep` in the bounding set
    (root: the permitted and effective sets after exec are exactly those)."""
    drop = [c for c in all_caps() if c not in keep]
    return ("capsh", f"--drop={','.join(drop)}", "--", "-c", 'exec "$0" "$@"')


def caps_of(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"):
            out[k] = int(v.strip(), 16 if k.startswith("Cap") else 10)
    return out


def mask(names):
    return sum(1 << CAP[n] for n in names)


@pytest.fixture
def nobody_app(servers, tmp_path):
    """The Perl app running as nobody: discovering it needs CAP_SYS_PTRACE and
    CAP_DAC_READ_SEARCH."""
    port = free_port()
    return servers([*NOBODY, "perl", str(world_readable(APPS / "app.pl")), str(port)], port,
                   log=tmp_path / "nobody-app.log")


def get(port, path, method="GET", data=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pid_of_listener(port):
    """pid of the process listening on 127.0.0.1:port (the app, not setpriv's
    parent: setpriv execs, so it is the same pid)."""
    return int(subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True,
                              text=True, check=True).stdout.split("pid=")[1].split(",")[0])


# ---- least privilege

def test_exactly_the_documented_capabilities(rastro, nobody_app, servers, tmp_path):
    """Under capsh with only CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and
    CAP_DAC_READ_SEARCH, rastro traces another user's process; once started
    it holds only the last two, and still traces a process that appears
    later (the traced map is updated through its descriptor, no CAP_BPF)."""
    app_pid = pid_of_listener(nobody_app.port)
    later_port = free_port()
    r = rastro(config_for_ports(nobody_app.port, later_port), prefix=capsh_only(DOCUMENTED))
    r.wait_traced(app_pid)
    assert "capabilities after start-up: CAP_SYS_PTRACE CAP_DAC_READ_SEARCH (all others " \
        "dropped)" in r.stderr()
    c = caps_of(r.proc.pid)
    assert (c["CapEff"], c["CapPrm"], c["CapInh"], c["CapAmb"]) == (mask(KEPT), mask(KEPT), 0, 0)
    # capsh left the four in the bounding set; without CAP_SETPCAP rastro
    # cannot shrink it, and no_new_privs keeps them from coming back.
    assert c["CapBnd"] == mask(DOCUMENTED)
    assert c["NoNewPrivs"] == 1

    later = servers([*NOBODY, "perl", str(world_readable(APPS / "app.pl")), str(later_port)],
                    later_port,
                    log=tmp_path / "later.log")
    r.wait_traced(pid_of_listener(later_port))
    assert get(nobody_app.port, "/users/1")[0] == 200
    assert get(later.port, "/users/2")[0] == 200
    recs = r.wait_records(2, lambda x: x["kind"] == "SERVER")
    time.sleep(0.5)
    recs = r.snapshot(lambda x: x["kind"] == "SERVER")
    assert sorted((x["server.port"], x["url.path"]) for x in recs) == sorted(
        [(nobody_app.port, "/users/1"), (later.port, "/users/2")])
    assert r.stop() == 0


def test_as_root_keeps_two_capabilities_and_shrinks_bounding_set(rastro, perl_app):
    r = rastro(config_for_ports(perl_app.port))
    r.wait_traced(perl_app.pid)
    wait_for(lambda: "capabilities after start-up" in r.stderr(), what="the capability drop")
    c = caps_of(r.proc.pid)
    assert (c["CapEff"], c["CapPrm"], c["CapBnd"], c["CapInh"], c["CapAmb"],
            c["NoNewPrivs"]) == (mask(KEPT), mask(KEPT), mask(KEPT), 0, 0, 1)
    assert get(perl_app.port, "/products")[0] == 200
    (rec,) = r.wait_records(1)
    assert rec["url.path"] == "/products"


@pytest.mark.parametrize("missing", DOCUMENTED)
def test_each_capability_is_needed(rastro, nobody_app, tmp_path, missing):
    """Without CAP_BPF or CAP_PERFMON rastro cannot load its programs (one
    line, exit 1); without CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH it cannot
    see another user's process (/proc/PID/exe, /proc/PID/fd) and reports
    nothing about it."""
    keep = [c for c in DOCUMENTED if c != missing]
    app_pid = pid_of_listener(nobody_app.port)
    if missing in ("cap_bpf", "cap_perfmon"):
        r = rastro(config_for_ports(nobody_app.port), prefix=capsh_only(keep),
                   wait_started=False)
        assert r.proc.wait(30) == 1
        word = "CAP_BPF" if missing == "cap_bpf" else "CAP_PERFMON"
        assert "missing privileges" in r.stderr() and f"no {word}" in r.stderr()
        return
    r = rastro(config_for_ports(nobody_app.port), prefix=capsh_only(keep))
    wait_for(lambda: "capabilities after start-up" in r.stderr(), what="start-up to end")
    assert get(nobody_app.port, "/users/1")[0] == 200
    time.sleep(1.5)  # the records of a traced app arrive within 50 ms
    assert r.snapshot() == []
    assert f"instrumenting pid {app_pid}" not in r.stderr()
    if missing == "cap_sys_ptrace":  # /proc/PID/exe is refused: said once
        assert r.stderr().count("discovery needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH") == 1


# ---- data minimisation

def scan(texts, secret):
    """Names of the texts that contain the secret in any usual encoding."""
    forms = {secret, secret.encode().hex(), urllib.parse.quote(secret),
             secret.encode().hex().upper()}
    return [name for name, text in texts.items() if any(f in text for f in forms)]


def run_client(rastros, argv, reconnect, lines):
    """Starts a client reading commands from a pipe, waits until every rastro
    traces it (exec discovery is asynchronous), has it reconnect so that the
    new connection's start is seen, then feeds it the lines."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        for r in rastros:
            r.wait_traced(p.pid)
        time.sleep(0.3)
        out, _ = p.communicate(reconnect + "".join(x + "\n" for x in lines), timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out


def test_planted_secret_appears_nowhere(rastro, perl_app, postgres, redis_server,
                                        otlp_receiver, tmp_path):
    """A secret in a request body, a response body, request headers, a query
    string, SQL literals (and a server error message quoting one), and Redis
    values: not in the trace printer (JSON and text), the logs at DEBUG, the
    decoded OTLP traces and metrics, nor /metrics. The requests themselves
    are reported (so the test looks at real output)."""
    secret = "Zq7" + secrets.token_hex(12)
    prom_json, prom_text = free_port(), free_port()
    cfg = ("log_level: DEBUG\n"
           "discovery:\n  instrument:\n"
           f"    - open_ports: {perl_app.port}\n      name: web\n"
           f"    - open_ports: {postgres.port}\n      name: pgserver\n"
           f"    - open_ports: {redis_server.port}\n      name: redisserver\n"
           "    - exe_path: \"*/psql\"\n      name: psql\n"
           "    - exe_path: \"*/redis-cli\"\n      name: rediscli\n"
           "otel_traces_export:\n  schedule_delay: 100ms\n"
           "otel_metrics_export:\n  interval: 300ms\n")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}
    rj = rastro(cfg, env={**env, "RASTRO_PROMETHEUS_PORT": str(prom_json)}, printer="json")
    rt = rastro(cfg, env={"RASTRO_PROMETHEUS_PORT": str(prom_text)}, printer="text")
    # The control: with the minimisation switched off the same traffic shows
    # the secret, so the scan below does look at what carries it.
    rk = rastro(cfg + "attributes:\n  keep_query_values: true\n  keep_db_literals: true\n",
                printer="json")
    for r in (rj, rt, rk):
        r.wait_traced(perl_app.pid)

    hdrs = {"Authorization": f"Bearer {secret}", "X-Api-Key": secret,
            "Cookie": f"session={secret}", "User-Agent": "rastro-test"}
    assert get(perl_app.port, "/echo", method="POST", data=f"password={secret}".encode(),
               headers=hdrs) == (200, f"password={secret}".encode())
    assert get(perl_app.port, f"/products?token={secret}&page=2", headers=hdrs)[0] == 200
    out = run_client((rj, rt, rk), [str(PSQL), "-X", "-h", "127.0.0.1", "-p",
                                    str(postgres.port), "-U", "postgres", "-d", "postgres"],
                     "\\connect shop\n",
                     [f"SELECT name FROM products WHERE name = '{secret}';",
                      f"SELECT 1 WHERE '{secret}'::int = 1;",
                      f"INSERT INTO orders (product_id, qty) SELECT 1, length('{secret}');"])
    assert f'invalid input syntax for type integer: "{secret}"' in out
    out = run_client((rj, rt, rk), [str(REDIS_CLI), "-p", str(redis_server.port)],
                     f"connect 127.0.0.1 {redis_server.port}\n",
                     [f"SET k1 {secret}", "GET k1", f"HSET h1 f1 {secret}", "HGETALL h1"])
    assert out.count(secret) == 2, out  # GET and HGETALL returned it

    def have_all(r):
        recs = r.snapshot()
        return (sum(x.get("service.name") == "web" for x in recs) >= 2
                and sum(x.get("service.name") == "psql" for x in recs) >= 3
                and sum(x.get("service.name") == "rediscli" for x in recs) >= 4)
    try:
        wait_for(lambda: have_all(rj), timeout=20)
    except TimeoutError:
        raise AssertionError(("every client's records (json)",
                              [(x.get("service.name"), x.get("name")) for x in rj.snapshot()],
                              rj.stderr()[-3000:]))
    wait_for(lambda: len([x for x in rt.lines if " rediscli " in x or "rediscli" in x]) >= 4,
             timeout=20, what="the text printer's lines")
    recs = rj.settle()
    web = [x for x in recs if x.get("service.name") == "web"]
    assert sorted((x["http.request.method"], x["url.path"], x.get("url.query")) for x in web) \
        == [("GET", "/products", "token=?&page=?"), ("POST", "/echo", None)]
    assert {x["user_agent.original"] for x in web} == {"rastro-test"}
    assert [x["db.query.text"] for x in recs if x.get("service.name") == "psql"] == [
        "SELECT name FROM products WHERE name = ?;", "SELECT ? WHERE ?::int = ?;",
        "INSERT INTO orders (product_id, qty) SELECT ?, length(?);"]
    assert [x["db.query.text"] for x in recs if x.get("service.name") == "rediscli"
            and x["db.operation.name"] != "COMMAND"] == ["SET ? ?", "GET ?", "HSET ? ? ?",
                                                         "HGETALL ?"]
    otlp_receiver.wait_spans(9, timeout=20)
    wait_for(lambda: otlp_receiver.metrics(), timeout=10, what="an OTLP metrics export")

    texts = {"json printer": "\n".join(rj.lines), "text printer": "\n".join(rt.lines),
             "/metrics (json run)": urllib.request.urlopen(
                 f"http://127.0.0.1:{prom_json}/metrics", timeout=10).read().decode(),
             "/metrics (text run)": urllib.request.urlopen(
                 f"http://127.0.0.1:{prom_text}/metrics", timeout=10).read().decode()}
    wait_for(lambda: have_all(rk), timeout=20, what="every client's records (control)")
    rk.settle()
    for r in (rj, rt, rk):
        assert r.stop() == 0
    assert scan({"control": "\n".join(rk.lines)}, secret) == ["control"]
    texts["log (json run)"] = rj.stderr()
    texts["log (text run)"] = rt.stderr()
    texts["OTLP requests, decoded"] = otlp_receiver.output.read_text()
    assert "url.path=/echo" in texts["text printer"] or "/echo" in texts["text printer"]
    assert " DEBUG " in texts["log (json run)"]
    assert scan(texts, secret) == []


# ---- what rastro creates

def test_nothing_reachable_by_unprivileged_users(rastro, perl_app, tmp_path):
    """rastro creates no file and pins nothing; its only endpoint listens on
    loopback; an unprivileged user can neither open its BPF maps by id nor
    read its environment (where OTLP headers may carry credentials)."""
    cwd, tmpdir, home = (tmp_path / d for d in ("cwd", "tmp", "home"))
    for d in (cwd, tmpdir, home):
        d.mkdir()
    pins = sorted(os.listdir("/sys/fs/bpf"))
    shm = sorted(os.listdir("/dev/shm"))
    prom = free_port()
    secret = "Zq7" + secrets.token_hex(8)
    r = rastro(config_for_ports(perl_app.port), env={
        "RASTRO_PROMETHEUS_PORT": str(prom), "TMPDIR": str(tmpdir), "HOME": str(home),
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"authorization={secret}",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces"},
        prefix=("env", "-C", str(cwd)))
    r.wait_traced(perl_app.pid)
    wait_port(prom)
    pid = r.proc.pid

    def open_fds():
        out = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                pass  # closed meanwhile
        return out

    # What rastro holds, not what it has open for a moment (discovery reads
    # /proc, the exporters connect): the descriptors in two snapshots.
    first = open_fds()
    time.sleep(0.5)
    kinds = {fd: t for fd, t in open_fds().items() if first.get(fd) == t}
    files = {fd: t for fd, t in kinds.items() if t.startswith("/") and fd > 2}
    assert files == {}, files  # nothing on disk is held open (the config is read and closed)
    assert all(t.startswith(("anon_inode:", "socket:", "pipe:")) or t.startswith("/dev/null")
               for fd, t in kinds.items() if fd > 2), kinds
    listening = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True,
                               check=True).stdout
    mine = [ln.split()[3] for ln in listening.splitlines() if f"pid={pid}," in ln]
    assert mine == [f"127.0.0.1:{prom}"], mine
    unix = subprocess.run(["ss", "-Hxlp"], capture_output=True, text=True, check=True).stdout
    assert f"pid={pid}," not in unix

    from test_reliability_helpers import bpf_objects
    objs = bpf_objects(pid)
    some_map = min(objs["map"])
    as_nobody = subprocess.run([*NOBODY, "bpftool", "map", "dump", "id", str(some_map)],
                               capture_output=True, text=True)
    assert as_nobody.returncode != 0 and "not permitted" in as_nobody.stderr.lower(), \
        as_nobody.stderr
    env_read = subprocess.run([*NOBODY, "cat", f"/proc/{pid}/environ"], capture_output=True)
    assert env_read.returncode != 0 and secret.encode() not in env_read.stdout
    # /proc/PID/cmdline is world-readable: it holds only the config's path
    assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert r.stop() == 0
    assert secret not in r.stderr()
    for d in (cwd, tmpdir, home):
        assert os.listdir(d) == [], d
    assert sorted(os.listdir("/sys/fs/bpf")) == pins
    assert sorted(os.listdir("/dev/shm")) == shm


@pytest.mark.parametrize("address", [None, "::1", "0.0.0.0"])
def test_prometheus_listen_address(rastro, perl_app, address):
    """prometheus_export.address: 127.0.0.1 by default (other addresses, even
    127.0.0.2, are refused), ::1, or 0.0.0.0 (every address)."""
    port = free_port()
    env = {"RASTRO_PROMETHEUS_PORT": str(port)}
    if address:
        env["RASTRO_PROMETHEUS_ADDRESS"] = address
    r = rastro(config_for_ports(perl_app.port), env=env)

    def reachable(host):
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:
            return False
    shown = f"[{address}]" if address == "::1" else address or "127.0.0.1"
    assert f"Prometheus endpoint on http://{shown}:{port}/metrics" in r.stderr()
    got = {h: reachable(h) for h in ("127.0.0.1", "127.0.0.2", "::1")}
    want = {None: {"127.0.0.1": True, "127.0.0.2": False, "::1": False},
            "::1": {"127.0.0.1": False, "127.0.0.2": False, "::1": True},
            "0.0.0.0": {"127.0.0.1": True, "127.0.0.2": True, "::1": False}}[address]
    assert got == want
    assert r.stop() == 0
