"""Discovery: Beyla's selectors and environment variables, default names,
prefork workers, processes that come and go."""
import contextlib
import datetime
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import APPS, free_port, needs_root, run_gated_forker, wait_for, wait_port
from test_http1 import get

pytestmark = needs_root


def test_exe_path_glob_and_default_name(rastro, servers, tmp_path):
    """exe_path alone selects by the executable's full path; without a name the
    service is named after the executable."""
    port = free_port()
    # A private copy of the interpreter, so that the glob selects only the app
    # (not the test runner, which is python too).
    import shutil
    py = tmp_path / "bin" / "legacy-python"
    py.parent.mkdir()
    shutil.copy(os.path.realpath("/usr/bin/python3"), py)
    r = rastro("discovery:\n  instrument:\n    - exe_path: \"*/bin/legacy-pyth*\"\n")
    app = servers([str(py), str(APPS / "pyapp.py"), str(port)], port, log=tmp_path / "py.log")
    r.wait_traced(app.pid)
    assert get(port, "/hello")[0] == 200
    (rec,) = r.wait_records(1, lambda x: x["kind"] == "SERVER")
    assert rec["service.name"] == "legacy-python"
    assert rec["service.namespace"] == ""


def test_all_selectors_of_an_entry_must_match(rastro, servers, tmp_path):
    port = free_port()
    r = rastro(f"discovery:\n  instrument:\n    - open_ports: {port}\n"
               "      exe_path: \"*/nginx\"\n      name: never\n")
    app = servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "a.log")
    time.sleep(1.5)
    get(port, "/")
    time.sleep(1)
    assert r.snapshot() == []
    assert f"instrumenting pid {app.pid} " not in r.stderr()


def test_open_port_from_environment_and_otel_service_name(rastro, servers, tmp_path):
    port = free_port()
    app = servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "a.log")
    r = rastro("log_level: INFO\n", env={"BEYLA_OPEN_PORT": f"1-2,{port}",
                                         "OTEL_SERVICE_NAME": "from-env"})
    r.wait_traced(app.pid)
    get(port, "/products")
    (rec,) = r.wait_records(1)
    assert rec["service.name"] == "from-env"


def test_port_range_entry_first_match_wins(rastro, servers, tmp_path):
    port = free_port()
    app = servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "a.log")
    r = rastro("discovery:\n  instrument:\n"
               f"    - open_ports: \"{port - 1}-{port + 1}\"\n      name: first\n"
               f"    - open_ports: {port}\n      name: second\n")
    r.wait_traced(app.pid)
    get(port, "/")
    (rec,) = r.wait_records(1)
    assert rec["service.name"] == "first"


# Listens, then hands the socket to a program it starts, which never calls
# listen() itself (as systemd's socket activation or inetd do).
ACTIVATOR = """
import os, socket, subprocess, sys
port, program, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
child = subprocess.Popen([program, "-c", SERVE, str(s.fileno())], pass_fds=[s.fileno()])
open(pidfile + ".tmp", "w").write(str(child.pid))  # renamed: never read half-written
os.rename(pidfile + ".tmp", pidfile)
child.wait()
"""
SERVE = """
import socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
while True:
    c, _ = s.accept()
    if c.recv(4096):
        c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
    c.close()
"""


def test_inherited_listening_socket_found_by_the_scan(rastro, servers, tmp_path):
    """A server that never calls listen() (its socket is inherited) is found by
    the periodic scan (discovery.poll_interval), which asks the kernel's socket
    diagnostics for the listening sockets of rastro's own network namespace:
    it never reads /proc/PID/net/tcp, whose every read walks the whole
    established-connection hash."""
    port = free_port()
    py = tmp_path / "bin" / "activated-py"
    py.parent.mkdir()
    shutil.copy(os.path.realpath("/usr/bin/python3"), py)
    r = rastro("discovery:\n  poll_interval: 300ms\n  instrument:\n"
               f"    - open_ports: {port}\n      exe_path: \"*/bin/activated-py\"\n"
               "      name: activated\n")
    syscalls = tmp_path / "strace.log"
    st = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=openat,socket", "-o",
                           str(syscalls), "-p", str(r.proc.pid)])
    try:
        wait_for(lambda: syscalls.exists(), timeout=10, what="strace to attach")
        time.sleep(0.5)
        pidfile = tmp_path / "child"
        servers(["python3", "-c", ACTIVATOR.replace("SERVE", repr(SERVE)), str(port), str(py),
                 str(pidfile)], port, log=tmp_path / "activator.log")
        child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=10,
                             what="the server to start"))
        # not at its exec (its entry needs a port, and it opened none), nor at
        # the activator's listen() (another executable): at a scan
        r.wait_traced(child)
        assert f"instrumenting pid {child} ({py}) as service activated" in r.stderr()
        assert get(port, "/inherited")[0] == 200
        (rec,) = r.wait_records(1, lambda x: x["kind"] == "SERVER")
        assert (rec["service.name"], rec["url.path"], rec["process.pid"]) == \
            ("activated", "/inherited", child)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(10)
    log = syscalls.read_text()
    assert "NETLINK_SOCK_DIAG" in log, log[-2000:]
    assert not re.search(r"/proc/\d+/net/tcp", log), re.findall(r".*/net/tcp.*", log)[:5]


# Holds 25 sockets until a line comes on stdin, then execs itself (new
# sockets, the same pid).
HOLDER = """
import os, socket, sys
held = [socket.socket() for _ in range(25)]
print("ready", flush=True)
sys.stdin.readline()
os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], sys.argv[1]])
"""


def rescanning_rastro(rastro, port, name, pid):
    """rastro selecting port's server (pid) with a rescan every 200 ms."""
    r = rastro(f"discovery:\n  poll_interval: 200ms\n  instrument:\n"
               f"    - open_ports: {port}\n      name: {name}\n")
    r.wait_traced(pid)
    return r


@contextlib.contextmanager
def strace_of(r, syscalls, log):
    """rastro's `syscalls` written to log while the block runs."""
    st = subprocess.Popen(["strace", "-qq", "-e", f"trace={syscalls}", "-o", str(log),
                           "-p", str(r.proc.pid)])
    try:
        wait_for(lambda: log.exists(), timeout=10, what="strace to attach")
        yield
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(10)


def fd_links_read(log, pid):
    """How many descriptor links of pid the strace log shows rastro reading."""
    return len(re.findall(rf'readlink\("/proc/{pid}/fd/\d+"', log.read_text()))


def test_a_scan_examines_a_process_again_only_after_a_change(rastro, perl_app, tmp_path):
    """The periodic scan (a safety net behind the kernel's events) examines
    a process it did not select again only when something may have changed
    its answer unseen: a new process, an exec, a lost event, or a minute
    since the last scan that examined every process. Examining one reads
    the link of each of its file descriptors (for open_ports), about 5 µs
    each here: every scan did so for every process of the host (200
    processes with 50 descriptors each: 10 ms of CPU a second at the default
    5 s)."""
    holders = [subprocess.Popen(["/usr/bin/python3", "-c", HOLDER, HOLDER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for h in holders:
            assert h.stdout.readline() == "ready\n"
        r = rescanning_rastro(rastro, perl_app.port, "svc", perl_app.pid)
        log = tmp_path / "strace.log"
        # Each holder has 28 descriptors. None is read again, or once if
        # the kernel lost an event or skipped a program run meanwhile (the
        # next scan examines every process); the build before read them at
        # every scan.
        once = 28
        with strace_of(r, "readlink", log):
            time.sleep(2)  # about 10 scans
            assert all(fd_links_read(log, h.pid) <= once for h in holders), \
                [fd_links_read(log, h.pid) for h in holders]
            before = fd_links_read(log, holders[0].pid)
            holders[0].stdin.write("exec\n")
            holders[0].stdin.flush()
            assert holders[0].stdout.readline() == "ready\n"
            wait_for(lambda: fd_links_read(log, holders[0].pid) >= before + once, timeout=5,
                     what="the exec'd process examined again")
            time.sleep(1)
            assert all(fd_links_read(log, h.pid) <= once for h in holders[1:]), \
                [fd_links_read(log, h.pid) for h in holders]
        # the selected process was examined and traced all along
        assert get(perl_app.port, "/products")[0] == 200
        r.wait_records(1, lambda x: x["server.port"] == perl_app.port)
    finally:
        for h in holders:
            h.kill()
            h.wait()


def listening_in(pid, port):
    """Whether pid's network namespace has a TCP socket listening on port."""
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def test_a_server_in_another_network_namespace(rastro, tmp_path):
    """A server in a network namespace of its own (a container's), started
    before rastro, is found by the first scan through /proc/PID/net/tcp
    (socket diagnostics answer for rastro's own namespace only) and its
    requests, sent inside that namespace, are traced. Processes there that
    hold no socket (a pause container, a health check's shell) are examined
    without that read, which walks the machine's whole established-connection
    hash."""
    port = free_port()
    log = open(tmp_path / "contained.log", "w")
    server = subprocess.Popen(
        ["unshare", "-n", "sh", "-c",
         f"ip link set lo up && exec /usr/bin/python3 {APPS / 'pyapp.py'} {port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sleepers = []
    try:
        wait_for(lambda: listening_in(server.pid, port), timeout=10,
                 what="the server to listen in its namespace")
        r = rescanning_rastro(rastro, port, "contained", server.pid)
        trace = tmp_path / "strace.log"
        with strace_of(r, "openat", trace):
            time.sleep(0.3)
            sleepers = [subprocess.Popen(["unshare", "-n", "sleep", "60"]) for _ in range(3)]
            for i in range(3):
                out = subprocess.run(
                    ["nsenter", "-t", str(server.pid), "-n", "curl", "-s", "-o", "/dev/null",
                     "-w", "%{http_code}", f"http://127.0.0.1:{port}/hello?i={i}"],
                    capture_output=True, text=True, timeout=15)
                assert out.stdout == "200"
            time.sleep(1)  # several scans since the sleepers started
        recs = r.wait_records(3, lambda x: x["kind"] == "SERVER")
        assert {(x["service.name"], x["process.pid"], x["url.path"]) for x in recs} == \
            {("contained", server.pid, "/hello")}
        reads = re.findall(r'openat\(AT_FDCWD, "/proc/(\d+)/net/tcp6?"', trace.read_text())
        assert not {int(p) for p in reads} & {s.pid for s in sleepers}, reads
    finally:
        for p in sleepers + [server]:
            p.kill()
            p.wait()
        log.close()


def test_client_traced_from_its_first_request(rastro, servers, tmp_path):
    """A process selected by exe_path is traced from its first request, even
    one it makes a few milliseconds after its exec (curl): the exec event wakes
    rastro at once, rather than waiting for the next drain
    (ebpf.poll_interval, 50 ms), by which time such a client is done."""
    port = free_port()
    servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "app.log")
    curl = tmp_path / "bin" / "legacy-curl"
    curl.parent.mkdir()
    shutil.copy("/usr/bin/curl", curl)
    r = rastro("discovery:\n  instrument:\n    - exe_path: \"*/bin/legacy-curl\"\n")
    runs = 5
    for i in range(runs):
        out = subprocess.run([str(curl), "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.0.0.1:{port}/products?run={i}"],
                             capture_output=True, text=True, timeout=15)
        assert out.stdout == "200"
        time.sleep(0.2)  # rastro's rate limit on these wakeups is 2 ms
    recs = r.wait_records(runs, lambda x: x["kind"] == "CLIENT", timeout=15)
    # (query values are redacted in url.full)
    assert [x["url.full"] for x in recs] == [f"http://127.0.0.1:{port}/products?run=?"] * runs
    assert {x["service.name"] for x in recs} == {"legacy-curl"}


TWO_LISTENS = r"""
import socket, sys, time
def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s
first, second = listener(int(sys.argv[1])), listener(int(sys.argv[2]))
first.listen(8)
t = time.time()
while time.time() - t < 0.0005:  # inside rastro's 2 ms window, after its drain
    pass
second.listen(8)
print(time.time(), flush=True)
time.sleep(60)
"""


def test_a_listen_inside_the_wakeup_window_is_not_left_waiting(rastro, tmp_path):
    """A listen() (or an exec) wakes rastro at once, at most once every 2 ms.
    A process that listens on a port no rule selects, then half a millisecond
    later on one that is selected: the first listen() woke rastro, which drained
    it before the second came, inside the window. The drain comes back when
    the window is over: the process is traced within milliseconds (about 2 in
    our runs), not at the next periodic drain (ebpf.poll_interval, 1 s here:
    about 1,000 ms, and 49 ms with the default 50 ms, before that drain)."""
    other, port = free_port(), free_port()
    (tmp_path / "two.py").write_text(TWO_LISTENS)
    r = rastro(f"discovery:\n  instrument:\n    - open_ports: {port}\n      name: two\n",
               env={"RASTRO_POLL_INTERVAL": "1s"})
    delays = []
    for _ in range(3):
        time.sleep(1.2)  # an idle agent, its last wakeup long past
        p = subprocess.Popen(["/usr/bin/python3", str(tmp_path / "two.py"), str(other),
                              str(port)], stdout=subprocess.PIPE, text=True)
        try:
            listened = float(p.stdout.readline())
            r.wait_traced(p.pid)
            stamp = re.search(rf"^(\S+) INFO  rastro: instrumenting pid {p.pid} ", r.stderr(),
                              re.M).group(1)
            traced = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            delays.append(traced - listened)
        finally:
            p.kill()
            p.wait()
    assert max(delays) < 0.3, f"traced {delays} s after its listen()"


def start_forker(rastro, servers, tmp_path, env):
    """A traced process that forks a worker once rastro traces it; the worker
    serves one request, then exits. Returns (rastro, port, worker pid); the
    file `exited` appears when the worker is gone."""
    port = free_port()
    r = rastro(f"discovery:\n  instrument:\n    - open_ports: {port}\n      name: forker\n",
               env={"RASTRO_LOG_LEVEL": "DEBUG", **env})
    run_gated_forker(r, servers, tmp_path, port, f"""
pid = os.fork()
if pid == 0:                          # the worker serves one request, then exits
    while True:
        c, _ = s.accept()
        if c.recv(4096):
            break
        c.close()                     # the test's readiness probe
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    c.close()
    os._exit(0)
open("{tmp_path}/forked.tmp", "w").write(str(pid))  # renamed: never read half-written
os.rename("{tmp_path}/forked.tmp", "{tmp_path}/forked")
os.waitpid(pid, 0)
open("{tmp_path}/exited.tmp", "w").write(str(pid))  # renamed: never read half-written
os.rename("{tmp_path}/exited.tmp", "{tmp_path}/exited")
time.sleep(60)
""", what="the fork")
    return r, port, int((tmp_path / "forked").read_text())


def test_fork_after_tracing_is_inherited_and_exit_forgotten(rastro, servers, tmp_path):
    """A traced process that forks a worker later: the worker is traced by the
    kernel from its first instruction; when it exits it is forgotten."""
    r, port, worker = start_forker(rastro, servers, tmp_path, {})
    assert get(port, "/work")[0] == 200
    (rec,) = r.wait_records(1)
    wait_for(lambda: (tmp_path / "exited").exists(), what="the worker to exit")
    assert rec["process.pid"] == worker
    assert rec["service.name"] == "forker"
    assert f"forked {worker}: traced as forker" in r.stderr()


def test_fork_event_lost_child_still_attributed(rastro, servers, tmp_path):
    """The same fork, its FORK event lost (as when the control ring is full;
    RASTRO_SELFTEST_LOSE_FORK_EVENTS=1 makes rastro ignore every one): the
    kernel traces the worker anyway and its data events carry the service it
    traces it under, so its request is still the parent's service's, although
    the worker is gone before rastro reads them."""
    r, port, worker = start_forker(rastro, servers, tmp_path,
                                   {"RASTRO_SELFTEST_LOSE_FORK_EVENTS": "1"})
    assert get(port, "/work")[0] == 200
    (rec,) = r.wait_records(1)
    assert rec["process.pid"] == worker
    assert rec["service.name"] == "forker"
    assert f"forked {worker}:" not in r.stderr()


# ---- prefork servers started after rastro: the master's listen() selects it,
# its workers are traced (those forked before rastro reacted by the /proc walk,
# the later ones by the kernel's fork hook) and their requests carry the
# master's service name and the worker's pid.

def children_of(pid):
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(d))
    return out


def prefork_config(port, name):
    return (f"log_level: DEBUG\ndiscovery:\n  instrument:\n"
            f"    - open_ports: {port}\n      name: {name}\n      namespace: prefork\n")


def check_prefork(r, master, name, nworkers, requests):
    """requests: [(path, status)]. Waits until the master's nworkers workers are
    traced, sends the requests (one connection each) and asserts one record per
    request, from a worker, with the master's service name. Returns (records,
    bodies)."""
    r.wait_traced(master.pid)
    workers = wait_for(lambda: len(children_of(master.pid)) >= nworkers
                       and children_of(master.pid), timeout=20, what=f"{nworkers} workers")
    for w in workers:
        wait_for(lambda: f"forked {w}:" in r.stderr() or f"forked {w} before being traced"
                 in r.stderr(), what=f"worker {w} to be traced")
    results = [get(master.port, path) for path, _ in requests]
    assert [st for st, _ in results] == [st for _, st in requests]
    pred = lambda x: x["kind"] == "SERVER" and x["server.port"] == master.port  # noqa: E731
    r.wait_records(len(requests), pred, timeout=15)
    # A connection each, served by different workers on different CPUs:
    # the records come in the order the CPUs delivered them.
    recs = sorted(r.settle(pred, quiet=1.0), key=lambda x: x["start_time_unix_nano"])
    assert [(x["http.request.method"], x["url.path"], x["http.response.status_code"],
             x["http.response.body.size"]) for x in recs] == [
        ("GET", path, st, len(body)) for (path, st), (_, body) in zip(requests, results)]
    assert all(x["service.name"] == name and x["service.namespace"] == "prefork" for x in recs)
    kids = children_of(master.pid)
    assert master.pid not in {x["process.pid"] for x in recs}
    assert {x["process.pid"] for x in recs} <= kids, (recs, kids)
    return recs, [body for _, body in results]


def assert_body_pids(recs, bodies):
    """The app answers 'worker PID': each record carries the pid that served it."""
    assert [x["process.pid"] for x in recs] == [int(b.split()[1]) for b in bodies]


HYPNOTOAD_APP = """
use Mojolicious::Lite;
app->config(hypnotoad => {{listen => ['http://127.0.0.1:{port}'], workers => 2,
                           pid_file => '{dir}/hypnotoad.pid'}});
get '/w/:i' => sub {{ my $c = shift; $c->render(text => "worker $$") }};
app->start;
"""


def test_hypnotoad_workers(rastro, servers, tmp_path):
    if not shutil.which("hypnotoad"):
        pytest.skip("hypnotoad (libmojolicious-perl) is not installed")
    port = free_port()
    app = tmp_path / "toad.pl"
    app.write_text(HYPNOTOAD_APP.format(port=port, dir=tmp_path))
    r = rastro(prefork_config(port, "toad"))
    master = servers(["hypnotoad", "-f", str(app)], port, log=tmp_path / "toad.log")
    reqs = [(f"/w/{i}", 200) for i in range(6)] + [("/missing", 404)]
    recs, bodies = check_prefork(r, master, "toad", 2, reqs)
    assert_body_pids(recs[:6], bodies[:6])


STARMAN_APP = """
sub {
    my $env = shift;
    return [404, ['Content-Type' => 'text/plain'], ['not here']]
        if $env->{PATH_INFO} eq '/missing';
    return [200, ['Content-Type' => 'text/plain'], ["worker $$"]];
};
"""


def test_starman_workers(rastro, servers, tmp_path):
    if not shutil.which("starman"):
        pytest.skip("Debian package starman is not installed")
    port = free_port()
    app = tmp_path / "app.psgi"
    app.write_text(STARMAN_APP)
    r = rastro(prefork_config(port, "starman"))
    master = servers(["starman", "--listen", f"127.0.0.1:{port}", "--workers", "2", str(app)],
                     port, log=tmp_path / "starman.log")
    reqs = [(f"/w/{i}", 200) for i in range(6)] + [("/missing", 404)]
    recs, bodies = check_prefork(r, master, "starman", 2, reqs)
    assert_body_pids(recs[:6], bodies[:6])


GUNICORN_APP = """
import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/missing":
        status, body = "404 Not Found", b"not here"
    else:
        status, body = "200 OK", f"worker {os.getpid()}".encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]
"""


def test_gunicorn_workers(rastro, servers, tmp_path):
    if not shutil.which("gunicorn"):
        pytest.skip("Debian package gunicorn is not installed")
    port = free_port()
    (tmp_path / "wsgiapp.py").write_text(GUNICORN_APP)
    r = rastro(prefork_config(port, "gunicorn"))
    master = servers(["gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                      "--chdir", str(tmp_path), "wsgiapp:app"], port, log=tmp_path / "gunicorn.log")
    reqs = [(f"/w/{i}", 200) for i in range(6)] + [("/missing", 404)]
    recs, bodies = check_prefork(r, master, "gunicorn", 2, reqs)
    assert_body_pids(recs[:6], bodies[:6])


APACHE_PREFORK_CONF = """
ServerRoot {dir}
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
User www-data
Group www-data
StartServers 2
MinSpareServers 1
MaxSpareServers 2
DocumentRoot {dir}/www
<Directory {dir}/www>
    Require all granted
</Directory>
"""


def test_apache_prefork_workers(rastro, servers):
    binary = "/usr/sbin/apache2"
    if not os.path.exists("/usr/lib/apache2/modules/mod_mpm_prefork.so"):
        pytest.skip("apache2 with mpm_prefork is not installed")
    # Its workers run as www-data: a directory they can read (tmp_path is 0700).
    d = Path(tempfile.mkdtemp(prefix="rastro-apache-prefork-"))
    try:
        d.chmod(0o755)
        (d / "www").mkdir(mode=0o755)
        (d / "www" / "index.html").write_bytes(b"hello from apache prefork\n")
        (d / "www" / "index.html").chmod(0o644)
        port = free_port()
        (d / "httpd.conf").write_text(APACHE_PREFORK_CONF.format(dir=d, port=port))
        r = rastro(prefork_config(port, "apache"))
        master = servers([binary, "-f", str(d / "httpd.conf"), "-DFOREGROUND"], port,
                         log=d / "out.log")
        reqs = [("/index.html", 200)] * 6 + [("/missing", 404)]
        recs, bodies = check_prefork(r, master, "apache", 2, reqs)
        assert bodies[0] == b"hello from apache prefork\n"
        master.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def spawn_with_pid(argv, want, log, tries=200):
    """Starts argv as pid `want` (global pid namespace, where rastro's pids
    live) by setting the kernel's last pid just before forking. Other processes
    may fork in between: retries; None when it never got the pid."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(want - 1))
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        if proc.pid == want:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_reused_pid_is_not_misattributed(rastro, servers, tmp_path):
    """A traced process exits and an untraced one gets its pid at once: the
    new process's traffic yields no record (the kernel dropped the exited
    process's entry; nothing in user space puts the pid back)."""
    traced_port, other_port = free_port(), free_port()
    r = rastro(f"log_level: DEBUG\ndiscovery:\n  instrument:\n"
               f"    - open_ports: {traced_port}\n      name: old\n")
    first = servers(["/usr/bin/python3", str(APPS / "pyapp.py"), str(traced_port)], traced_port,
                    log=tmp_path / "first.log")
    r.wait_traced(first.pid)
    assert get(traced_port, "/hello")[0] == 200
    (rec,) = r.wait_records(1)
    assert (rec["process.pid"], rec["service.name"]) == (first.pid, "old")
    pid = first.pid
    first.stop()  # exited and reaped: the pid is free
    with open(tmp_path / "second.log", "w") as log:
        second = spawn_with_pid(["/usr/bin/python3", str(APPS / "pyapp.py"), str(other_port)],
                                pid, log)
        if second is None:
            pytest.skip(f"could not get pid {pid} again (other processes forked first)")
        try:
            wait_port(other_port)
            for i in range(5):
                assert get(other_port, f"/hello?i={i}")[0] == 200
            assert get(other_port, "/status/404")[0] == 404
            time.sleep(1.0)
            recs = r.settle(quiet=1.0)
            assert [(x["process.pid"], x["url.path"]) for x in recs] == [(pid, "/hello")]
            assert r.stderr().count(f"instrumenting pid {pid} ") == 1
            assert second.poll() is None
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(10)
