"""Discovery: Beyla's selectors and environment variables, default names,
prefork workers, processes that come and go."""
import os
import time

from conftest import APPS, free_port, needs_root, wait_for
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


def test_fork_after_tracing_is_inherited_and_exit_forgotten(rastro, servers, tmp_path):
    """A traced process that forks a worker later: the worker is traced by the
    kernel from its first instruction; when it exits it is forgotten."""
    port = free_port()
    script = tmp_path / "forker.py"
    script.write_text(f"""
import os, socket, time, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen(16)
time.sleep(1.5)                       # rastro traces us meanwhile
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
os.waitpid(pid, 0)
open("{tmp_path}/worker", "w").write(str(pid))
time.sleep(60)
""")
    r = rastro(f"discovery:\n  instrument:\n    - open_ports: {port}\n      name: forker\n",
               env={"RASTRO_LOG_LEVEL": "DEBUG"})
    srv = servers(["/usr/bin/python3", str(script)], port, log=tmp_path / "f.log")
    r.wait_traced(srv.pid)
    assert get(port, "/work")[0] == 200
    (rec,) = r.wait_records(1)
    wait_for(lambda: (tmp_path / "worker").exists(), what="the worker to exit")
    worker = int((tmp_path / "worker").read_text())
    assert rec["process.pid"] == worker
    assert rec["service.name"] == "forker"
    assert f"forked {worker}: traced as forker" in r.stderr()
