"""Shared fixtures: a running rastro with the JSON trace printer, real servers
on loopback, free ports. Tests that need root (BPF) are skipped, never
passed, when not root."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RASTRO = Path(os.environ.get("RASTRO_BIN", ROOT / "rastro"))
APPS = ROOT / "tests" / "e2e" / "apps"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF programs")


def built_with_asan():
    """Whether the rastro under test is an ASan build (make asan)."""
    try:
        return b"__asan_init" in RASTRO.read_bytes()
    except OSError:
        return False


# Bounds on rastro's RSS growth hold for the release build. ASan pads every
# allocation with redzones, keeps freed memory in a quarantine and maps shadow
# memory for what is touched: under it the same bounds are doubled.
RSS_SLACK = 2 if built_with_asan() else 1


_SHARED_DIR = None


def world_readable(path):
    """A copy of a file that any user can read and execute, for tests that run
    something as nobody: the checkout may sit in a directory only root can
    enter (a `mktemp -d` clone is 0700)."""
    global _SHARED_DIR
    import atexit
    import shutil
    import tempfile
    if _SHARED_DIR is None:
        _SHARED_DIR = Path(tempfile.mkdtemp(prefix="rastro-shared-", dir="/tmp"))
        _SHARED_DIR.chmod(0o755)
        atexit.register(shutil.rmtree, _SHARED_DIR, True)  # True: ignore errors
    dst = _SHARED_DIR / Path(path).name
    if not dst.exists():
        shutil.copy(path, dst)
        dst.chmod(0o755)
    return dst


def run_gated_forker(r, servers, tmp_path, port, forks, what):
    """Starts tmp_path/forker.py: a Python process listening on port (for
    rastro r's open_ports rule) that waits until rastro traces it, then runs
    `forks` (Python source, with os, time and the listening socket s at
    hand), which must end by creating tmp_path/forked. Returns once it did."""
    script = tmp_path / "forker.py"
    script.write_text(f"""
import os, socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen(16)
while not os.path.exists("{tmp_path}/go"):  # until rastro traces us
    time.sleep(0.05)
""" + forks)
    srv = servers(["/usr/bin/python3", str(script)], port, log=tmp_path / "f.log")
    r.wait_traced(srv.pid)
    (tmp_path / "go").write_text("")
    wait_for(lambda: (tmp_path / "forked").exists(), what=what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Rastro:
    """rastro running with trace_printer=json; records are parsed from stdout."""

    def __init__(self, tmp_path, config, env=None, args=(), printer="json", prefix=()):
        self.tmp_path = Path(tmp_path)
        self.config_path = self.tmp_path / f"rastro-{id(self)}.yml"
        self.config_path.write_text(config)
        self.stderr_path = self.tmp_path / f"rastro-{id(self)}.err"
        self.env = dict(os.environ)
        # A test sees only what it configures.
        for k in list(self.env):
            if k.startswith(("RASTRO_", "BEYLA_", "OTEL_")):
                del self.env[k]
        self.env.update({"RASTRO_TRACE_PRINTER": printer, "RASTRO_PROMETHEUS_PORT": "0"})
        self.env.update(env or {})
        self.args = list(args)
        self.prefix = list(prefix)
        self.records = []
        self.lines = []
        self.proc = None
        self._lock = threading.Lock()

    def start(self, wait_started=True):
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [*self.prefix, str(RASTRO), "--config", str(self.config_path), *self.args],
            stdout=subprocess.PIPE, stderr=self._stderr, env=self.env, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_started:
            wait_for(lambda: "started" in self.stderr() or self.proc.poll() is not None,
                     timeout=20, what="rastro to start")
            if self.proc.poll() is not None:
                raise RuntimeError(f"rastro exited {self.proc.returncode}: {self.stderr()}")
        return self

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._lock:
                self.lines.append(line)
                if line.startswith("{"):
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass

    def stderr(self):
        try:
            return self.stderr_path.read_text()
        except FileNotFoundError:
            return ""

    def wait_traced(self, pid, timeout=10.0):
        """Waits until rastro instruments pid (directly or as a fork). A
        timeout says what the process was and what rastro logged."""
        try:
            return wait_for(lambda: f"instrumenting pid {pid} " in self.stderr()
                            or f"forked {pid}:" in self.stderr(),
                            timeout=timeout, what=f"pid {pid} to be instrumented")
        except TimeoutError as e:
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = f"alive: {exe} ({cmd.strip()}), parent " + next(
                    line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("PPid:"))
            except (OSError, StopIteration) as err:
                state = f"not readable: {err}"
            tail = "\n".join(self.stderr().splitlines()[-40:])
            raise TimeoutError(f"{e}; the process is {state}; rastro's log ends with:\n{tail}") \
                from None

    def snapshot(self, pred=None):
        with self._lock:
            recs = list(self.records)
        return [r for r in recs if pred is None or pred(r)]

    def wait_records(self, n, pred=None, timeout=10.0):
        """Waits for at least n matching records; returns all matching."""
        wait_for(lambda: len(self.snapshot(pred)) >= n, timeout=timeout,
                 what=f"{n} records (have {len(self.snapshot(pred))})")
        return self.snapshot(pred)

    def settle(self, pred=None, quiet=1.0, timeout=15.0):
        """Waits until no new matching record arrives for `quiet` seconds."""
        deadline = time.time() + timeout
        last = -1
        while time.time() < deadline:
            n = len(self.snapshot(pred))
            if n == last:
                return self.snapshot(pred)
            last = n
            time.sleep(quiet)
        return self.snapshot(pred)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._reader.join(timeout=5)
            self._stderr.close()
        return self.proc.returncode if self.proc else None


class Server:
    """A real server process started by a test."""

    def __init__(self, argv, port, cwd=None, env=None, log=None, wait=True):
        self.port = port
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            try:
                wait_port(port)
            except TimeoutError:
                self.stop()
                raise

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def rastro(tmp_path):
    """rastro(config_yaml, env=None, args=()) -> started Rastro; stopped at teardown."""
    started = []

    def make(config, env=None, args=(), printer="json", wait_started=True, prefix=()):
        r = Rastro(tmp_path, config, env=env, args=args, printer=printer, prefix=prefix)
        started.append(r)
        return r.start(wait_started=wait_started)

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def servers():
    """servers(argv, port, ...) -> Server; all stopped at teardown."""
    running = []

    def make(argv, port, **kw):
        s = Server(argv, port, **kw)
        running.append(s)
        return s

    yield make
    for s in running:
        s.stop()


@pytest.fixture
def perl_app(servers, tmp_path):
    """The seed's Perl/Mojolicious app (with test routes) on a free port."""
    port = free_port()
    return servers(["perl", str(APPS / "app.pl"), str(port)], port, log=tmp_path / "perlapp.log")


def config_for_ports(*ports, name="svc", namespace="test", extra=""):
    entries = "".join(
        f"    - open_ports: {p}\n      name: {name}\n      namespace: {namespace}\n" for p in ports)
    return f"log_level: INFO\ndiscovery:\n  instrument:\n{entries}{extra}"
