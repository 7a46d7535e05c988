"""`make demo` (scripts/demo.sh) works end to end: the seed's app under rastro,
the seed's requests plus the load the script sends, the RED table with the
exact request counts per route, and the trace printer's lines. Also the
trace printer's default when nothing sets it, which decides what a first
`rastro --config ...` at a terminal shows."""
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import RASTRO, ROOT, config_for_ports, free_port, needs_root, wait_for

# What demo.sh sends: each of the seed's three curl requests, then
# /?n=[1-100], /products?n=[1-150] and /error/[1-50].
EXPECTED = {"GET /": 101, "GET /products": 151, "GET /error": 1, "GET /error/*": 50}


def run_demo(env, timeout=600):
    # Its own session: on a timeout the script, the app and rastro all stop.
    proc = subprocess.Popen([str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"demo.sh did not finish in {timeout}s\n{out}\n{err}")
    return proc.returncode, out, err


@needs_root
def test_demo_once_shows_red_table_and_traces():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
    # Free ports, not the seed's 1337 and rastro's default 9400, which other
    # tests use; RASTRO_BIN: the binary under test, no rebuild.
    app_port, prom_port = free_port(), free_port()
    while prom_port == app_port:
        prom_port = free_port()
    env.update({"DEMO_ONCE": "1", "DEMO_PORT": str(app_port), "DEMO_PROM_PORT": str(prom_port),
                "RASTRO_BIN": str(RASTRO)})
    rc, out, err = run_demo(env)
    assert rc == 0, f"demo.sh exited {rc}\n{out}\n{err}"

    # The seed's requests were answered by the seed's app.
    assert "Hello, eBPF + Beyla + Perl!" in out
    assert "HTTP 404" in out
    assert f"(only the port changed: {app_port})" in out
    assert "measured after" not in err, err

    # The RED table: one row per route with the exact number of requests sent.
    table = out.split("== RED per route", 1)[1].split("== recent traces", 1)[0]
    assert f"http://127.0.0.1:{prom_port}/metrics" in table.splitlines()[0]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"^\s+poc-ebpf/perlapp\s+(GET \S+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+"
                     r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            rows[m.group(1)] = m
    assert {route: int(m.group(2)) for route, m in rows.items()} == EXPECTED, table
    for route, m in rows.items():
        assert int(m.group(4)) == 0, f"{route}: no request of the demo is a server error"
        p50, p95, p99 = (float(m.group(i)) for i in (5, 6, 7))
        assert 0 < p50 <= p95 <= p99, m.group(0)
        assert float(m.group(3)) > 0, f"{route}: req/s"

    # The trace printer's lines: the seed's service, real HTTP server spans.
    traces = out.split("== recent traces (trace printer)", 1)[1].split("== rastro's log", 1)[0]
    spans = [l for l in traces.splitlines()
             if re.search(r" SERVER HTTP/1\.1 \d{3} GET /\S* route=/\S* .*svc=poc-ebpf/perlapp "
                          r"pid=\d+ trace=[0-9a-f]{32} span=[0-9a-f]{16} ", l)]
    assert spans, traces

    # The script stopped what it started: nothing listens on its ports any more.
    for port in (app_port, prom_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"


def start_unset_printer(tmp_path, config, stdout, log_level="INFO"):
    """rastro with trace_printer set nowhere (no file key, no variable, no option)."""
    cfg = tmp_path / "rastro.yml"
    cfg.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
    env.update({"RASTRO_PROMETHEUS_PORT": "0", "RASTRO_LOG_LEVEL": log_level})
    err = open(tmp_path / "rastro.err", "w")
    proc = subprocess.Popen([str(RASTRO), "--config", str(cfg)], stdout=stdout, stderr=err,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc, err, tmp_path / "rastro.err"


def stop(proc, err):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err.close()


@needs_root
def test_trace_printer_default_follows_the_terminal(tmp_path, perl_app):
    """Not set anywhere: text on a terminal without an OTLP traces endpoint
    (said at INFO), disabled on a pipe or with an endpoint (said at DEBUG only:
    a service's start-up log is unchanged)."""
    config = config_for_ports(perl_app.port)

    # A terminal, no OTLP: every request is printed as a text line.
    master, slave = pty.openpty()
    proc, err, err_path = start_unset_printer(tmp_path, config, slave)
    os.close(slave)
    try:
        wait_for(lambda: f"instrumenting pid {perl_app.pid} " in err_path.read_text()
                 or proc.poll() is not None, timeout=20, what="rastro to trace the app")
        assert proc.poll() is None, err_path.read_text()
        assert (" INFO  rastro: trace printer: text (trace_printer not set: stdout is a "
                "terminal and no OTLP traces endpoint is configured" in err_path.read_text())
        urllib.request.urlopen(f"http://127.0.0.1:{perl_app.port}/products").read()
        seen = b""
        deadline = time.time() + 10
        while b"GET /products" not in seen and time.time() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        assert re.search(rb"SERVER HTTP/1\.1 200 GET /products route=/products ", seen), seen
    finally:
        stop(proc, err)
        os.close(master)

    # A pipe: nothing printed; at INFO nothing said, at DEBUG why.
    proc, err, err_path = start_unset_printer(tmp_path, config, subprocess.PIPE)
    try:
        wait_for(lambda: f"instrumenting pid {perl_app.pid} " in err_path.read_text()
                 or proc.poll() is not None, timeout=20, what="rastro to trace the app")
        assert proc.poll() is None, err_path.read_text()
        urllib.request.urlopen(f"http://127.0.0.1:{perl_app.port}/products").read()
        time.sleep(1)
        assert "trace printer" not in err_path.read_text()
    finally:
        stop(proc, err)
        assert proc.stdout.read() == b""
        proc.stdout.close()
    proc, err, err_path = start_unset_printer(tmp_path, config, subprocess.PIPE, "DEBUG")
    try:
        wait_for(lambda: "trace printer:" in err_path.read_text() or proc.poll() is not None,
                 timeout=20, what="the printer's choice")
        assert (" DEBUG rastro: trace printer: disabled (trace_printer not set: stdout is not "
                "a terminal" in err_path.read_text())
    finally:
        stop(proc, err)
        proc.stdout.close()

    # A terminal, but spans go to an OTLP endpoint: disabled.
    master, slave = pty.openpty()
    proc, err, err_path = start_unset_printer(
        tmp_path, config + "otel_traces_export:\n  endpoint: http://127.0.0.1:9/\n", slave,
        "DEBUG")
    os.close(slave)
    try:
        wait_for(lambda: "trace printer:" in err_path.read_text() or proc.poll() is not None,
                 timeout=20, what="the printer's choice")
        assert (" DEBUG rastro: trace printer: disabled (trace_printer not set: traces are "
                "exported over OTLP" in err_path.read_text())
    finally:
        stop(proc, err)
        os.close(master)
