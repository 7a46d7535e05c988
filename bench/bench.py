#!/usr/bin/env python3
"""rastro's benchmark: what rastro costs, measured in one run on this machine.

Runs everything itself (nginx, an OTLP sink, loadgen, wrk, PostgreSQL +
pgbench, the seed's Perl app, redis-server + redis-benchmark, a syscall
microbenchmark) and prints one table.

Measures cost, never absolute speed (the machines are shared and noisy):
  - CPU per request: CPU time (/proc/PID/task/TID/schedstat, nanoseconds) of
    the server (nginx master + workers) and of rastro, over a known number of
    requests, without and with rastro, in alternating pairs; medians (the
    pgbench client's from its rusage).
  - in-kernel ns per request: run_time_ns of rastro's BPF programs (from
    /proc/RASTRO/fdinfo, kernel.bpf_stats_enabled=1) in a SEPARATE run, as
    bpf_stats' own clock reads cost about 2 us per nginx request.
  - capture: records (spans received by the OTLP sink) against requests sent,
    losses from rastro's self-metrics.

It is a benchmark, not a test: it never fails on a timing.

  bench/bench.py [--quick] [--pairs N] [--only ROW,...] [--json FILE] [--hooks socket|syscall]
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RASTRO = Path(os.environ.get("RASTRO_BIN", ROOT / "rastro"))
BUILD = Path(os.environ.get("RASTRO_BUILD", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
TOOLS = BUILD / "bench"
PG_BIN = None
for _v in ("17", "16", "15", "14", "13"):
    if Path(f"/usr/lib/postgresql/{_v}/bin/pgbench").exists():
        PG_BIN = Path(f"/usr/lib/postgresql/{_v}/bin")
        break

STARTED = []  # processes to stop on exit


def stop_started():
    """Stops every process the bench started, the last first (also after a
    failure: a leftover rastro would skew later measurements)."""
    for p in reversed(STARTED):
        try:
            p.stop()
        except Exception as e:  # keep stopping the others
            log(f"stopping {p}: {e}")
    STARTED.clear()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- helpers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_for(pred, timeout, interval=0.05):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(interval)


def cpu_s(pids):
    """CPU time of the processes (all their threads), in seconds, from
    /proc/PID/task/TID/schedstat: nanoseconds, where /proc/PID/stat's utime
    and stime count 10 ms ticks (a pgbench pair's rastro used 2 of them)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total / 1e9


def children(pid):
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            st = (d / "stat").read_text()
        except OSError:
            continue
        if int(st[st.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(d.name))
    return out


def status_kb(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def raise_nofile():
    """Open files up to the hard limit (10,000 connections need more than 1024)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_get(port, path, timeout=5.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def stop_proc(p, sig=signal.SIGTERM, timeout=15.0, group=False):
    if p is None or p.poll() is not None:
        return
    try:
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
        p.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            if group:
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
        except ProcessLookupError:
            pass
        p.wait()


# ---------------------------------------------------------------- processes

NGINX_CONF = """
daemon off;
master_process on;
user root;
worker_processes {workers};
worker_rlimit_nofile 19000;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 18000; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{ root {dir}/www; }}
        location /r/ {{ return 200 "ok\\n"; }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp, workers):
        self.dir = Path(tmp) / "nginx"
        (self.dir / "www").mkdir(parents=True, exist_ok=True)
        # A small static file: the page of a health check or a tiny asset.
        (self.dir / "www" / "index.html").write_text("<h1>rastro bench</h1>\n" * 4)
        self.port = free_port()
        self.workers = workers
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, workers=workers))
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=raise_nofile)
        STARTED.append(self)
        wait_port(self.port)
        wait_for(lambda: len(children(self.proc.pid)) >= workers, 10)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def stop(self):
        stop_proc(self.proc, group=True)


class Sink:
    """bench/otlp_sink.c: counts the spans rastro exports."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([str(TOOLS / "otlp_sink"), str(self.port)])
        STARTED.append(self)
        wait_port(self.port)

    def spans(self):
        return json.loads(http_get(self.port, "/count"))["spans"]

    def stop(self):
        stop_proc(self.proc)


def bpf_progs(pid):
    """run_time_ns and run_cnt of the BPF programs process pid holds (fdinfo)."""
    progs = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        kv = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        progs[int(kv["prog_id"])] = (int(kv.get("run_time_ns", 0)), int(kv.get("run_cnt", 0)))
    return progs


# Settings every rastro of the run gets (--hooks).
RASTRO_ENV = {}


class Rastro:
    def __init__(self, tmp, config, sink=None, printer="disabled", env=None):
        self.tmp = Path(tmp)
        self.prom = free_port()
        cfg = self.tmp / f"rastro-{self.prom}.yml"
        cfg.write_text(config)
        self.err_path = self.tmp / f"rastro-{self.prom}.err"
        e = {k: v for k, v in os.environ.items() if not k.startswith(("RASTRO_", "BEYLA_", "OTEL_"))}
        e.update({"RASTRO_TRACE_PRINTER": printer, "RASTRO_PROMETHEUS_PORT": str(self.prom)})
        if sink:
            e["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.port}"
        e.update(RASTRO_ENV)
        e.update(env or {})
        self.t_start = time.monotonic()
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([str(RASTRO), "--config", str(cfg)], env=e,
                                     stdout=subprocess.PIPE if printer != "disabled"
                                     else subprocess.DEVNULL, stderr=self.err, text=True)
        STARTED.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        return self.err_path.read_text()

    def wait_started(self, timeout=30):
        if not wait_for(lambda: " started: " in self.stderr() or self.proc.poll() is not None,
                        timeout):
            raise RuntimeError("rastro did not start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"rastro exited: {self.stderr()}")
        wait_port(self.prom)

    def wait_instrumenting(self, pid, timeout=10):
        return wait_for(lambda: f"instrumenting pid {pid} " in self.stderr(), timeout)

    def metrics(self):
        text = http_get(self.prom, "/metrics", timeout=10).decode()
        out = {}
        for line in text.splitlines():
            if not line.startswith("rastro_"):
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out

    def requests(self, m=None):
        m = m or self.metrics()
        return int(m.get("rastro_requests_total", 0))

    @staticmethod
    def losses(m):
        """Every count of something rastro could not report, by name."""
        out = {}
        for k, v in m.items():
            lost = (k.startswith("rastro_events_lost_total") and "parse_errors" not in k) or \
                k.startswith(("rastro_spans_dropped_total", "rastro_export_dropped_items_total",
                              "rastro_metric_records_dropped_total",
                              "rastro_unknown_service_events_total",
                              "rastro_events_unordered_total"))
            if lost and v:
                out[k] = int(v)
        return out

    def bpf_progs(self):
        """run_time_ns and run_cnt of rastro's own BPF programs."""
        return bpf_progs(self.pid)

    def stop(self):
        stop_proc(self.proc, timeout=20)
        self.err.close()


def rastro_config(rules, extra=""):
    return "log_level: INFO\ndiscovery:\n  instrument:\n" + rules + extra


def port_rule(port, name):
    return f"    - open_ports: {port}\n      name: {name}\n      namespace: bench\n"


class BpfStats:
    """kernel.bpf_stats_enabled=1 for the duration of a with-block, always reset."""

    def __enter__(self):
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"], check=False)


def kernel_ns(before, after):
    rt = sum(after[k][0] - before.get(k, (0, 0))[0] for k in after)
    cnt = sum(after[k][1] - before.get(k, (0, 0))[1] for k in after)
    return rt, cnt


def kernel_cost(r, run, idle_s=2.0):
    """In-kernel cost of run() (which returns how many requests it made):
    run_time_ns of rastro's programs with bpf_stats on, minus what they spent
    in an idle window just before (the syscalls of every other process on
    the machine: sys_exit runs for all of them), scaled to the run's length.
    The load generator's own syscalls stay in: they are part of the load.
    Returns ns per request, with and without the background subtracted."""
    with BpfStats():
        b0, t0 = r.bpf_progs(), time.monotonic()
        time.sleep(idle_s)
        b1, t1 = r.bpf_progs(), time.monotonic()
        n = run()
        b2, t2 = r.bpf_progs(), time.monotonic()
    bg_rt, bg_cnt = kernel_ns(b0, b1)
    rt, cnt = kernel_ns(b1, b2)
    scale = (t2 - t1) / (t1 - t0)
    n = max(n, 1)
    return {"kernel_ns": max(rt - bg_rt * scale, 0) / n, "kernel_ns_raw": rt / n,
            "runs_per_req": max(cnt - bg_cnt * scale, 0) / n, "ns_per_run": rt / max(cnt, 1)}


def bpf_floor(rounds=200000):
    """What bpf_stats reports per run for programs that do nothing, on the
    hooks of rastro's data programs (bench/bpf/noop.bpf.c), over a loopback
    TCP loop: the clock reads it adds to every run. None if it cannot load."""
    p = subprocess.Popen([str(TOOLS / "bpf_floor"), str(TOOLS / "noop.bpf.o")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if p.stdout.readline().strip() != "ready":
            log(f"bpf_floor: {p.stderr.read().strip()}")
            return None
        with BpfStats():
            before = bpf_progs(p.pid)
            subprocess.run([str(TOOLS / "syscalls"), "--tcp", str(rounds)], capture_output=True,
                           check=True)
            after = bpf_progs(p.pid)
        rt, cnt = kernel_ns(before, after)
        return rt / max(cnt, 1)
    finally:
        p.terminate()
        p.wait()


# ---------------------------------------------------------------- load

def loadgen(port, rate, requests, conns=16, path="/index.html", seconds=None, close=False):
    """close: a connection per request (Connection: close), at most conns open."""
    cmd = [str(TOOLS / "loadgen"), "--port", str(port), "--rate", str(rate),
           "--connections", str(conns), "--path", path]
    cmd += ["--seconds", str(seconds)] if seconds else ["--requests", str(requests)]
    cmd += ["--close"] if close else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def wrk(port, seconds, conns, path="/index.html"):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else None
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"sent": n, "completed": n, "rate": rps, "p99_ms": p99,
            "errors": int(errs.group(1)) if errs else 0}


# ---------------------------------------------------------------- the nginx rows

def start_traced_rastro(tmp, sink, server_pid, port, name, extra="", env=None):
    r = Rastro(tmp, rastro_config(port_rule(port, name), extra), sink=sink, env=env)
    r.wait_started()
    if not r.wait_instrumenting(server_pid):
        raise RuntimeError(f"rastro did not instrument pid {server_pid}: {r.stderr()}")
    return r


def settle_records(r, want_requests, base_requests, quiet=2.0, timeout=30.0):
    """Waits until rastro reported want_requests more records (or stopped
    counting for `quiet` s); returns how many it reported."""
    deadline = time.time() + timeout
    last, since = -1, time.time()
    while time.time() < deadline:
        n = r.requests() - base_requests
        if n >= want_requests:
            break
        if n != last:
            last, since = n, time.time()
        elif time.time() - since > quiet:
            break
        time.sleep(0.02)
    return r.requests() - base_requests


def settle_spans(sink, records, base_spans, timeout=30.0):
    """Waits until the sink received `records` more spans (or stopped
    receiving): the last batch waits for otel_traces_export.schedule_delay."""
    last, since = -1, time.time()
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = sink.spans() - base_spans
        if s >= records:
            break
        if s != last:
            last, since = s, time.time()
        elif time.time() - since > 7.0:
            break
        time.sleep(0.1)
    return sink.spans() - base_spans


def run_load(ngx, load, requests):
    """load: ("rate", R), ("close", R): a connection per request, or
    ("wrk", seconds, conns)."""
    if load[0] == "wrk":
        return wrk(ngx.port, load[1], load[2])
    if load[0] == "close":
        return loadgen(ngx.port, load[1], requests, conns=64, close=True)
    return loadgen(ngx.port, load[1], requests)


def measure_nginx(tmp, ngx, sink, with_rastro, load, requests):
    """One run: requests at a fixed rate (or wrk for some seconds). Returns
    the per-request costs. load: as run_load takes it."""
    r = None
    res = {"with": with_rastro}
    if with_rastro:
        r = start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
        http_get(ngx.port, "/index.html")  # the first record: tracing works
        if not wait_for(lambda: r.requests() >= 1, 10):
            raise RuntimeError("rastro reported nothing for the probe request")
        base_req, base_spans = r.requests(), sink.spans()
        r_cpu0 = cpu_s([r.pid])
    n_cpu0 = cpu_s(ngx.pids())
    lg = run_load(ngx, load, requests)
    n_cpu = cpu_s(ngx.pids()) - n_cpu0
    res.update(sent=lg["sent"], completed=lg["completed"], rate=lg["rate"], p99_ms=lg["p99_ms"],
               server_us=n_cpu / max(lg["completed"], 1) * 1e6)
    if with_rastro:
        # rastro's CPU up to the last record: not the idle wait for the last
        # span batch below (the schedule delay), which would charge seconds
        # of idle polling to these requests.
        records = settle_records(r, lg["sent"], base_req)
        r_cpu = cpu_s([r.pid]) - r_cpu0
        spans = settle_spans(sink, records, base_spans)
        m = r.metrics()
        res.update(records=records, spans=spans, losses=Rastro.losses(m),
                   rastro_us=r_cpu / max(lg["completed"], 1) * 1e6,
                   rss_kb=status_kb(r.pid, "VmHWM"), maps_kb=memory(r.pid)["bpf_maps"],
                   map_bytes=int(m.get("rastro_bpf_map_bytes", 0)),
                   parse_errors=int(sum(v for k, v in m.items() if "parse_errors" in k)))
        r.stop()
    return res


def kernel_run(tmp, ngx, sink, load, requests):
    """Separate run with bpf_stats on: in-kernel ns per request."""
    r = start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
    http_get(ngx.port, "/index.html")
    wait_for(lambda: r.requests() >= 1, 10)
    def run():
        return run_load(ngx, load, requests)["completed"]
    try:
        return kernel_cost(r, run)
    finally:
        r.stop()


def nginx_row(tmp, ngx, sink, label, load, requests, pairs):
    runs = {False: [], True: []}
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for w in order:
            res = measure_nginx(tmp, ngx, sink, w, load, requests)
            runs[w].append(res)
            log(f"{label} pair {i + 1}/{pairs} {'with' if w else 'without'}: "
                + json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in res.items()}))
    k = kernel_run(tmp, ngx, sink, load, requests)
    log(f"{label} in-kernel: {k}")
    wo, wi = runs[False], runs[True]
    row = {
        "row": label,
        "rate": median(x["rate"] for x in wi),
        "sent": sum(x["sent"] for x in wi),
        "records": sum(x["spans"] for x in wi),
        "rastro_records": sum(x["records"] for x in wi),
        "losses": sum(sum(x["losses"].values()) for x in wi),
        "loss_detail": [x["losses"] for x in wi if x["losses"]],
        "parse_errors": sum(x["parse_errors"] for x in wi),
        "server_us_without": median(x["server_us"] for x in wo),
        "server_us_with": median(x["server_us"] for x in wi),
        "server_us_without_spread": spread(x["server_us"] for x in wo),
        "server_us_with_spread": spread(x["server_us"] for x in wi),
        "rastro_us": median(x["rastro_us"] for x in wi),
        "rastro_us_spread": spread(x["rastro_us"] for x in wi),
        "kernel_ns": k["kernel_ns"],
        "kernel_ns_raw": k["kernel_ns_raw"],
        "kernel_runs_per_req": k["runs_per_req"],
        "kernel_ns_per_run": k["ns_per_run"],
        "p99_without": median(x["p99_ms"] for x in wo),
        "p99_with": median(x["p99_ms"] for x in wi),
        "rss_mb": max(x["rss_kb"] for x in wi) / 1024,
        "rss_no_maps_mb": max(x["rss_kb"] - x["maps_kb"] for x in wi) / 1024,
        "map_mb": wi[0]["map_bytes"] / 2**20,
    }
    row["added_us"] = row["rastro_us"] + row["kernel_ns"] / 1000
    if load[0] == "wrk":
        ratios = [b["rate"] / a["rate"] for a, b in zip(wo, wi)]
        row["throughput_ratio"] = median(ratios)
        row["throughput_spread"] = spread(ratios)
        row["rate_without"] = median(x["rate"] for x in wo)
    return row


def saturation_rate(ngx):
    """nginx's saturation throughput here (wrk, 3 s)."""
    return wrk(ngx.port, 3, 32)["rate"]


# ---------------------------------------------------------------- other rows

def startup_row(tmp, ngx, sink, tries=3):
    """rastro start -> first record, with nginx already serving a client on
    connections opened before rastro started."""
    times = []
    for _ in range(tries):
        bg = subprocess.Popen([str(TOOLS / "loadgen"), "--port", str(ngx.port), "--rate", "2000",
                               "--seconds", "6", "--connections", "4"],
                              stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        cfg = rastro_config(port_rule(ngx.port, "nginx"))
        r = Rastro(tmp, cfg, sink=sink, printer="json")
        t0 = r.t_start
        line = r.proc.stdout.readline()  # the first record
        t1 = time.monotonic()
        if line.startswith("{"):
            times.append(t1 - t0)
        threading.Thread(target=lambda p=r.proc: [None for _ in p.stdout], daemon=True).start()
        wait_for(lambda: " started: " in r.stderr(), 10)
        r.stop()
        bg.wait()
    log(f"start-up to first record: {times}")
    return {"row": "start-up: rastro start -> first record (nginx already running)",
            "startup_s": median(times), "startup_spread": spread(times)}


# Holds N sockets and sleeps: one of a crowded host's processes.
HOLDER = "import socket, sys, time\nheld = [socket.socket() for _ in range(int(sys.argv[1]))]\n" \
    "print('ready', flush=True)\ntime.sleep(3600)\n"


def idle_row(tmp, ngx, sink, seconds=20.0, crowd=None):
    """rastro's CPU while the server it traces is idle: its timers, its
    discovery scans (discovery.poll_interval, 5 s), nothing to read. CPU from
    /proc/PID/schedstat (ns), after a warm-up that opened connections and
    made the routes' series. crowd=(processes, sockets each): that many more
    processes on the host, started before rastro, each holding that many
    sockets (the scans read the link of each descriptor of a process they
    examine)."""
    holders = []
    if crowd:
        holders = [subprocess.Popen(["python3", "-c", HOLDER, str(crowd[1])],
                                    stdout=subprocess.PIPE, text=True) for _ in range(crowd[0])]
        for h in holders:
            h.stdout.readline()
    r = start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
    try:
        loadgen(ngx.port, 1000, 2000)
        time.sleep(1.0)
        with open(f"/proc/{r.pid}/schedstat") as f:
            c0 = int(f.read().split()[0])
        t0 = time.monotonic()
        time.sleep(seconds)
        with open(f"/proc/{r.pid}/schedstat") as f:
            c1 = int(f.read().split()[0])
        ms = (c1 - c0) / 1e6 / (time.monotonic() - t0)
    finally:
        r.stop()
        for h in holders:
            h.kill()
            h.wait()
    host = f", {crowd[0]} more processes with {crowd[1]} sockets each" if crowd else ""
    log(f"idle rastro{host}: {ms:.3f} ms CPU per second")
    return {"row": f"idle: rastro tracing an idle nginx{host}", "idle_ms_per_s": ms,
            "notes": f"{ms:.2f} ms of CPU per second ({ms / 10:.3f}% of one CPU) over "
                     f"{seconds:.0f} s"}


def untraced_row(tmp, ngx, sink, pairs, rounds):
    """ns added per read()/write() syscall of a process rastro does not trace:
    on a pipe (no socket: with the socket hooks no program runs at all), on
    a loopback TCP connection (every send and receive runs a program, which
    stops at the traced-process test), and on two pipes between two
    processes on one CPU, where every read blocks (a context switch each;
    no program runs there since rastro stopped hooking sched_switch, which
    bpf_stats did not fully count: the CPU-time delta is the figure)."""
    def once(mode):
        args = {"pipe": [str(rounds)], "tcp": ["--tcp", str(rounds)],
                "block": ["--block", str(rounds // 4)]}[mode]
        out = subprocess.run([str(TOOLS / "syscalls")] + args, capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)

    res = {"row": "untraced process: read()/write() on a pipe, on loopback TCP, and "
                  "blocking on pipes, rastro tracing nginx", "syscalls": 2 * rounds}
    for mode in ("pipe", "tcp", "block"):
        wo, wi = [], []
        for i in range(pairs):
            for w in ((False, True) if i % 2 == 0 else (True, False)):
                if w:
                    r = start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
                    wi.append(once(mode)["ns_per_syscall"])
                    r.stop()
                else:
                    wo.append(once(mode)["ns_per_syscall"])
        deltas = [b - a for a, b in zip(wo, wi)]
        # In-kernel part, exactly: the programs' own time during the loop,
        # per syscall of the loop (nginx is idle meanwhile).
        r = start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
        try:
            with BpfStats():
                before = r.bpf_progs()
                run = once(mode)
                after = r.bpf_progs()
        finally:
            r.stop()
        rt, cnt = kernel_ns(before, after)
        log(f"untraced {mode}: without {wo} with {wi}; bpf {rt} ns in {cnt} runs")
        res[mode] = {"ns_without": median(wo), "ns_with": median(wi), "ns_added": median(deltas),
                     "ns_added_spread": spread(deltas), "bpf_runs": cnt,
                     "bpf_ns_per_syscall": rt / run["syscalls"],
                     "bpf_ns_per_run": rt / max(cnt, 1), "switches": run.get("switches")}
    res["interleaved"] = untraced_interleaved(max(2 * pairs, 10) * 20)
    return res


def untraced_interleaved(blocks):
    """Loopback TCP again, measured inside one process (bench/untraced.c):
    rastro's two data programs (from this tree's build, RASTRO_BUILD, not
    RASTRO_BIN's) attached and detached in turn, 10,000
    syscalls at a time, so that the host's load is about the same with and
    without; then the same for programs that return at once
    (bench/bpf/noop.bpf.c), what the kernel's dispatch of any program on
    those hooks costs. ns added per syscall: medians of the pairs, with
    quartiles."""
    out = {}
    for name in ("rastro", "noop"):
        out[name] = interleaved(name, blocks)
        if not out[name]:
            return None
    return out


def interleaved(programs, blocks=200):
    """bench/untraced with rastro's programs or the empty ones ("noop"):
    its JSON result, or None if they cannot be loaded here."""
    extra = ["--noop", str(TOOLS / "noop.bpf.o")] if programs == "noop" else []
    r = subprocess.run([str(TOOLS / "untraced"), "--blocks", str(blocks)] + extra,
                       capture_output=True, text=True)
    if r.returncode:
        log(f"untraced (interleaved, {programs}): {r.stderr.strip()}")
        return None
    res = json.loads(r.stdout)
    log(f"untraced (interleaved, {programs}): {res}")
    return res


def events_row(tmp, sink, rounds):
    """In-kernel cost of one data event: a process rastro traces (matched by
    exe_path) sends and receives 1 byte at a time over a loopback TCP
    connection to itself, so every send and receive runs a program that
    reports it. Per program run, with bpf_stats on, raw and net of the
    floor; every event must reach rastro (events received == syscalls)."""
    r = Rastro(tmp, rastro_config(f'    - exe_path: "{TOOLS}/syscalls"\n      name: syscalls\n'
                                  "      namespace: bench\n"), sink=sink)
    try:
        r.wait_started()
        # It connects, then waits for a byte on stdin: it runs once traced.
        p = subprocess.Popen([str(TOOLS / "syscalls"), "--tcp", str(rounds)],
                             env={**os.environ, "SYSCALLS_WAIT": "1"}, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        try:
            if not r.wait_instrumenting(p.pid):
                raise RuntimeError(f"rastro did not trace the syscall loop: {r.stderr()}")
            m0 = r.metrics()
            with BpfStats():
                before = r.bpf_progs()
                out, _ = p.communicate("x", timeout=600)
                after = r.bpf_progs()
        finally:
            stop_proc(p)
        if p.returncode:
            raise RuntimeError(f"syscalls exited with {p.returncode}")
        syscalls = json.loads(out)["syscalls"]

        def received(m):
            return int(m.get("rastro_events_received_total", 0)
                       - m0.get("rastro_events_received_total", 0))
        wait_for(lambda: received(r.metrics()) >= syscalls, 10)
        m1 = r.metrics()
    finally:
        r.stop()
    rt, cnt = kernel_ns(before, after)
    n_received = received(m1)
    lost = sum(v - m0.get(k, 0) for k, v in Rastro.losses(m1).items())
    log(f"events: {syscalls} syscalls, {cnt} program runs, {rt} ns; {n_received} events received")
    return {"row": "traced process: 1-byte send/recv on loopback TCP, one data event each",
            "sent": syscalls, "records": n_received, "losses": lost,
            "event_ns_per_run": rt / max(cnt, 1), "event_runs": cnt}


class Postgres:
    def __init__(self, tmp):
        self.dir = Path(tmp) / "pg"
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        run_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(run_pg + [str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-U",
                                 "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            run_pg + [str(PG_BIN / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
                      "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                      "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "w"), start_new_session=True)
        STARTED.append(self)
        wait_port(self.port)
        wait_for(lambda: subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True).returncode == 0, 20)
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p",
                        str(self.port), "-U", "postgres", "postgres"], check=True,
                       capture_output=True)

    def pgbench(self, transactions):
        """pgbench select-only, one client; its CPU from its rusage."""
        p = subprocess.Popen([str(PG_BIN / "pgbench"), "-n", "-S", "-c", "1", "-j", "1", "-t",
                              str(transactions), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                              "postgres", "postgres"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        tps = re.search(r"tps = ([\d.]+)", out)
        lat = re.search(r"latency average = ([\d.]+) ms", out)
        done = re.search(r"number of transactions actually processed: (\d+)", out)
        return {"cpu_s": ru.ru_utime + ru.ru_stime, "tps": float(tps.group(1)) if tps else None,
                "latency_ms": float(lat.group(1)) if lat else None,
                "transactions": int(done.group(1)) if done else 0}

    def backend_cpu(self):
        return cpu_s([self.proc.pid] + children(self.proc.pid))

    def stop(self):
        stop_proc(self.proc, signal.SIGINT, group=True)


def pgbench_row(tmp, sink, pairs, transactions):
    pg = Postgres(tmp)
    cfg = rastro_config(f"    - exe_path: \"{PG_BIN}/pgbench\"\n      name: pgbench\n"
                        "      namespace: bench\n")
    wo, wi = [], []
    try:
        pg.pgbench(200)  # warm the server's caches
        for i in range(pairs):
            for w in ((False, True) if i % 2 == 0 else (True, False)):
                if not w:
                    wo.append(pg.pgbench(transactions))
                    continue
                r = Rastro(tmp, cfg, sink=sink)
                r.wait_started()
                base_req, base_spans = r.requests(), sink.spans()
                c0 = cpu_s([r.pid])
                res = pg.pgbench(transactions)
                records = settle_records(r, transactions, base_req)
                rastro_s = cpu_s([r.pid]) - c0
                spans = settle_spans(sink, records, base_spans)
                m = r.metrics()
                res.update(rastro_s=rastro_s, records=records, spans=spans,
                           losses=Rastro.losses(m), rss_kb=status_kb(r.pid, "VmHWM"),
                           maps_kb=memory(r.pid)["bpf_maps"])
                r.stop()
                wi.append(res)
                log(f"pgbench with: {res}")
            log(f"pgbench pair {i + 1}: without {wo[-1]}")
        # in-kernel, separately
        r = Rastro(tmp, cfg, sink=sink)
        r.wait_started()
        try:
            k = kernel_cost(r, lambda: pg.pgbench(transactions)["transactions"])
        finally:
            r.stop()
    finally:
        pg.stop()
    n = transactions
    client_wo = median(x["cpu_s"] / n * 1e6 for x in wo)
    client_wi = median(x["cpu_s"] / n * 1e6 for x in wi)
    rastro_us = median(x["rastro_s"] / n * 1e6 for x in wi)
    return {"row": "pgbench -S (1 client), traced as a PostgreSQL client by exe_path",
            "rate": median(x["tps"] for x in wi), "sent": sum(x["transactions"] for x in wi),
            "records": sum(x["spans"] for x in wi),
            "rastro_records": sum(x["records"] for x in wi),
            "losses": sum(sum(x["losses"].values()) for x in wi),
            "loss_detail": [x["losses"] for x in wi if x["losses"]],
            "server_us_without": client_wo, "server_us_with": client_wi,
            "rastro_us": rastro_us, "kernel_ns": k["kernel_ns"],
            "kernel_ns_raw": k["kernel_ns_raw"], "kernel_runs_per_req": k["runs_per_req"],
            "added_us": rastro_us + k["kernel_ns"] / 1000,
            "p99_without": None, "p99_with": None,
            "lat_without": median(x["latency_ms"] for x in wo),
            "lat_with": median(x["latency_ms"] for x in wi),
            "rss_mb": max(x["rss_kb"] for x in wi) / 1024,
            "rss_no_maps_mb": max(x["rss_kb"] - x["maps_kb"] for x in wi) / 1024}


def perl_row(tmp, sink, pairs, rate, requests):
    port = free_port()
    app = subprocess.Popen(["perl", str(ROOT / "tests/e2e/apps/app.pl"), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)

    class App:
        pass

    a = App()
    a.proc, a.port = app, port
    a.pids = lambda: [app.pid] + children(app.pid)
    a.stop = lambda: stop_proc(app, group=True)
    STARTED.append(a)
    wait_port(port)
    try:
        loadgen(port, 200, 200, conns=4, path="/")  # warm up
        runs = {False: [], True: []}
        for i in range(pairs):
            for w in ((False, True) if i % 2 == 0 else (True, False)):
                r = None
                if w:
                    r = start_traced_rastro(tmp, sink, app.pid, port, "perlapp")
                    base_req, base_spans = r.requests(), sink.spans()
                    r0 = cpu_s([r.pid])
                s0 = cpu_s(a.pids())
                lg = loadgen(port, rate, requests, conns=4, path="/")
                res = {"sent": lg["sent"], "completed": lg["completed"], "rate": lg["rate"],
                       "p99_ms": lg["p99_ms"],
                       "server_us": (cpu_s(a.pids()) - s0) / max(lg["completed"], 1) * 1e6}
                if w:
                    records = settle_records(r, lg["sent"], base_req)
                    r_cpu = cpu_s([r.pid]) - r0
                    spans = settle_spans(sink, records, base_spans)
                    m = r.metrics()
                    res.update(records=records, spans=spans, losses=Rastro.losses(m),
                               rastro_us=r_cpu / max(lg["completed"], 1) * 1e6,
                               rss_kb=status_kb(r.pid, "VmHWM"),
                               maps_kb=memory(r.pid)["bpf_maps"])
                    r.stop()
                runs[w].append(res)
                log(f"perl pair {i + 1} {'with' if w else 'without'}: {res}")
        r = start_traced_rastro(tmp, sink, app.pid, port, "perlapp")
        try:
            k = kernel_cost(r, lambda: loadgen(port, rate, requests, conns=4,
                                               path="/")["completed"])
        finally:
            r.stop()
    finally:
        a.stop()
    wo, wi = runs[False], runs[True]
    kns = k["kernel_ns"]
    rastro_us = median(x["rastro_us"] for x in wi)
    return {"row": "seed's Perl/Mojolicious app (legacy app), GET /",
            "rate": median(x["rate"] for x in wi), "sent": sum(x["sent"] for x in wi),
            "records": sum(x["spans"] for x in wi),
            "rastro_records": sum(x["records"] for x in wi),
            "losses": sum(sum(x["losses"].values()) for x in wi),
            "server_us_without": median(x["server_us"] for x in wo),
            "server_us_with": median(x["server_us"] for x in wi),
            "rastro_us": rastro_us, "kernel_ns": kns, "kernel_ns_raw": k["kernel_ns_raw"],
            "kernel_runs_per_req": k["runs_per_req"], "added_us": rastro_us + kns / 1000,
            "p99_without": median(x["p99_ms"] for x in wo),
            "p99_with": median(x["p99_ms"] for x in wi),
            "rss_mb": max(x["rss_kb"] for x in wi) / 1024,
            "rss_no_maps_mb": max(x["rss_kb"] - x["maps_kb"] for x in wi) / 1024}


class Redis:
    """redis-server, no persistence; redis-benchmark as its client."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind",
                                      "127.0.0.1", "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        STARTED.append(self)
        wait_port(self.port)

    def benchmark(self, ops):
        """SET then GET, ops/2 each, 4 connections each (closed loop)."""
        out = subprocess.run(["redis-benchmark", "-p", str(self.port), "-c", "4", "-n",
                              str(ops // 2), "-t", "set,get", "--csv"], capture_output=True,
                             text=True, check=True).stdout
        rates = [float(line.split('","')[1]) for line in out.splitlines()[1:] if line]
        return {"completed": ops // 2 * 2, "rate": median(rates)}

    def stop(self):
        stop_proc(self.proc)


def redis_row(tmp, sink, pairs, ops):
    """A Redis server traced by its port, the configuration of the report of
    OBI's cost on Redis (opentelemetry-ebpf-instrumentation#1025: open_ports
    6379). rastro parses Redis as its clients speak it, not a server's
    connections: those carry no protocol it knows, which it tells the
    kernel, and their data stops there (rastro.bpf.c, mutes)."""
    rd = Redis()
    try:
        rd.benchmark(20000)  # warm up
        runs = {False: [], True: []}
        for i in range(pairs):
            for w in ((False, True) if i % 2 == 0 else (True, False)):
                r = None
                if w:
                    r = start_traced_rastro(tmp, sink, rd.proc.pid, rd.port, "redis")
                    m0 = r.metrics()
                    r0 = cpu_s([r.pid])
                s0 = cpu_s([rd.proc.pid])
                b = rd.benchmark(ops)
                res = {"completed": b["completed"], "rate": b["rate"],
                       "server_us": (cpu_s([rd.proc.pid]) - s0) / b["completed"] * 1e6}
                if w:
                    # The last drain: up to ebpf.poll_interval after the load.
                    time.sleep(0.6)
                    m = r.metrics()
                    d = {k: int(m.get(k, 0) - m0.get(k, 0)) for k in (
                        "rastro_events_received_total", "rastro_events_muted_total",
                        "rastro_connections_muted_total")}
                    res.update(rastro_us=(cpu_s([r.pid]) - r0) / b["completed"] * 1e6,
                               events=d["rastro_events_received_total"],
                               muted=d["rastro_events_muted_total"],
                               muted_conns=d["rastro_connections_muted_total"],
                               losses=Rastro.losses(m), rss_kb=status_kb(r.pid, "VmHWM"),
                               maps_kb=memory(r.pid)["bpf_maps"])
                    r.stop()
                runs[w].append(res)
                log(f"redis pair {i + 1} {'with' if w else 'without'}: {res}")
        r = start_traced_rastro(tmp, sink, rd.proc.pid, rd.port, "redis")
        try:
            k = kernel_cost(r, lambda: rd.benchmark(ops)["completed"])
        finally:
            r.stop()
    finally:
        rd.stop()
    wo, wi = runs[False], runs[True]
    rastro_us = median(x["rastro_us"] for x in wi)
    return {"row": "redis-server traced by its port (OBI#1025's configuration), "
                   "redis-benchmark SET/GET, 4 connections",
            "rate": median(x["rate"] for x in wi), "sent": sum(x["completed"] for x in wi),
            "records": None, "events": sum(x["events"] for x in wi),
            "events_muted": sum(x["muted"] for x in wi),
            "connections_muted": sum(x["muted_conns"] for x in wi),
            "losses": sum(sum(x["losses"].values()) for x in wi),
            "server_us_without": median(x["server_us"] for x in wo),
            "server_us_with": median(x["server_us"] for x in wi),
            "server_us_without_spread": spread(x["server_us"] for x in wo),
            "server_us_with_spread": spread(x["server_us"] for x in wi),
            "rastro_us": rastro_us, "rastro_us_spread": spread(x["rastro_us"] for x in wi),
            "kernel_ns": k["kernel_ns"], "kernel_ns_raw": k["kernel_ns_raw"],
            "kernel_runs_per_req": k["runs_per_req"], "added_us": rastro_us + k["kernel_ns"] / 1000,
            "rate_without": median(x["rate"] for x in wo),
            "p99_without": None, "p99_with": None,
            "rss_mb": max(x["rss_kb"] for x in wi) / 1024,
            "rss_no_maps_mb": max(x["rss_kb"] - x["maps_kb"] for x in wi) / 1024}


def memory(pid):
    """VmHWM, VmRSS and the part of the RSS that is BPF maps mapped into the
    process (the ring buffer, mapped twice, and the .bss): kernel memory,
    reported separately (rastro_bpf_map_bytes)."""
    maps, cur = 0, ""
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = line
            elif line.startswith("Rss:") and "anon_inode:bpf-map" in cur:
                maps += int(line.split()[1])
    except FileNotFoundError:
        pass
    return {"hwm": status_kb(pid, "VmHWM"), "rss": status_kb(pid, "VmRSS"), "bpf_maps": maps}


def many_conns_row(tmp, ngx, sink, nconns, nroutes):
    """rastro's peak RSS with nconns open connections and nroutes routes.
    Completion is watched on the OTLP sink, not on the Prometheus endpoint:
    a scrape of this many series is itself a memory peak, measured apart."""
    import selectors
    raise_nofile()
    r = start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx",
                            extra="routes:\n  unmatched: path\n")
    socks = []
    try:
        base = sink.spans()
        sel = selectors.DefaultSelector()
        pending = 0
        for i in range(nconns):
            s = socket.create_connection(("127.0.0.1", ngx.port))
            s.sendall(f"GET /r/route-{i % nroutes} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
            pending += 1
            while pending > 256 or (i == nconns - 1 and pending):
                for key, _ in sel.select(timeout=5):
                    if key.fileobj.recv(4096):
                        sel.unregister(key.fileobj)
                        pending -= 1
        # Spans go out in batches of 512 or after the 5 s schedule delay.
        done = wait_for(lambda: sink.spans() - base >= nconns, 30, 0.2)
        mem = memory(r.pid)
        m = r.metrics()  # one scrape of every series
        after = memory(r.pid)
        res = {"row": f"{nconns} open connections, {nroutes} routes (nginx)",
               "sent": nconns, "records": sink.spans() - base,
               "rastro_records": int(m.get("rastro_requests_total", 0)),
               "losses": sum(Rastro.losses(m).values()),
               "rss_mb": mem["hwm"] / 1024,
               "rss_no_maps_mb": (mem["hwm"] - mem["bpf_maps"]) / 1024,
               "bpf_maps_rss_mb": mem["bpf_maps"] / 1024,
               "rss_after_scrape_mb": after["hwm"] / 1024,
               "connections": int(m.get("rastro_connections", 0)),
               "series": int(sum(v for k, v in m.items()
                                 if k.startswith("rastro_metric_series{"))),
               "map_mb": m.get("rastro_bpf_map_bytes", 0) / 2**20, "done": bool(done)}
    finally:
        for s in socks:
            s.close()
        r.stop()
    log(f"many connections: {res}")
    return res


# ---------------------------------------------------------------- the table

def fmt(v, spec="{:.2f}"):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return spec.format(v)


def table(rows, meta):
    cols = ["workload", "rate req/s", "requests sent", "records", "losses",
            "server CPU µs/req without", "with", "rastro CPU µs/req", "in-kernel ns/req (raw)",
            "added CPU µs/req", "throughput with/without", "p99 ms without", "with",
            "rastro peak RSS MB (without BPF maps)", "notes"]
    out = []
    for r in rows:
        notes = r.get("notes", "")
        tr = "-"
        if r.get("throughput_ratio") is not None:
            lo, hi = r["throughput_spread"]
            tr = f"{r['throughput_ratio'] * 100:.1f}% ({lo * 100:.1f}–{hi * 100:.1f})"
        rss = fmt(r.get("rss_mb"), "{:.1f}")
        if r.get("rss_no_maps_mb") is not None:
            rss += f" ({r['rss_no_maps_mb']:.1f})"
        kern = fmt(r.get("kernel_ns"), "{:.0f}")
        if r.get("kernel_ns_raw") is not None:
            kern += f" ({r['kernel_ns_raw']:.0f})"
        out.append([r["row"], fmt(r.get("rate"), "{:.0f}"), fmt(r.get("sent"), "{:d}"),
                    fmt(r.get("records"), "{:d}"), fmt(r.get("losses"), "{:d}"),
                    fmt(r.get("server_us_without")), fmt(r.get("server_us_with")),
                    fmt(r.get("rastro_us")), kern,
                    fmt(r.get("added_us")), tr, fmt(r.get("p99_without"), "{:.3f}"),
                    fmt(r.get("p99_with"), "{:.3f}"), rss, notes])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in out]
    return "\n".join(lines)


def machine():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"uname": " ".join(os.uname()), "cpu": cpu, "cpus": os.cpu_count(),
            "loadavg": Path("/proc/loadavg").read_text().strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="alternating without/with pairs")
    ap.add_argument("--quick", action="store_true", help="fewer requests and pairs (a smoke run)")
    ap.add_argument("--only", default="", help="rows: 5k,20k,50k,close5k,sat,startup,idle,crowded,untraced,events,"
                    "pgbench,perl,redis,conns (default: all)")
    ap.add_argument("--workers", type=int, default=1, help="nginx worker processes")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--hooks", choices=("auto", "socket", "syscall"), default="auto",
                    help="rastro's ebpf.hooks (syscall: the sys_exit fallback of older kernels)")
    ap.add_argument("--env", action="append", default=[], metavar="RASTRO_X=VALUE",
                    help="a setting for every rastro the bench starts, by its environment "
                    "variable (docs/configuration.md), e.g. RASTRO_RING_BUFFER_SIZE=1MiB; "
                    "repeatable")
    a = ap.parse_args()
    RASTRO_ENV["RASTRO_EBPF_HOOKS"] = a.hooks
    for kv in a.env:
        k, eq, v = kv.partition("=")
        if not eq or not k.startswith("RASTRO_"):
            ap.error(f"--env {kv!r}: expected RASTRO_NAME=VALUE")
        RASTRO_ENV[k] = v
    if os.geteuid() != 0:
        print("bench: needs root (BPF); nothing measured", file=sys.stderr)
        return 0
    only = set(filter(None, a.only.split(",")))
    want = lambda name: not only or name in only  # noqa: E731
    pairs = 1 if a.quick else a.pairs
    scale = 0.1 if a.quick else 1.0
    secs = 10  # seconds of load per run at each fixed rate

    meta = machine()
    meta["start"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    meta["hooks"] = a.hooks
    meta["env"] = a.env
    loads = []
    rows = []
    if any(want(x) for x in ("5k", "20k", "50k", "close5k", "sat", "untraced", "events", "pgbench",
                             "perl", "redis")):
        meta["bpf_stats_floor_ns"] = bpf_floor()
        log(f"bpf_stats floor: {meta['bpf_stats_floor_ns']} ns per run of a program that "
            "does nothing")
        # What running a program costs a syscall in CPU time, bpf_stats off:
        # the dispatch, which bpf_stats does not see, and no clock reads.
        d = interleaved("noop", 100 if a.quick else 200)
        meta["dispatch_ns"] = d["ns_added"] if d else None
    tmp = tempfile.mkdtemp(prefix="rastro-bench-")
    os.chmod(tmp, 0o755)
    try:
        sink = Sink()
        ngx = Nginx(tmp, a.workers)
        if any(want(x) for x in ("5k", "20k", "50k", "close5k", "sat")):
            sat = saturation_rate(ngx)
            log(f"nginx saturation here (wrk, {a.workers} worker): {sat:.0f} req/s")
            meta["saturation"] = sat
            for label, rate in (("5k", 5000), ("20k", 20000), ("50k", 50000)):
                if not want(label):
                    continue
                note = ""
                if label == "50k" and rate > 0.9 * sat:
                    # An open-loop rate at or above saturation only grows a
                    # queue: run just below it.
                    rate = int(0.9 * sat)
                    note = f"50k is above nginx's saturation here ({sat:.0f}/s): 90% of it"
                elif rate > sat:
                    note = f"above the saturation measured before the run ({sat:.0f}/s)"
                n = int(rate * secs * scale)
                loads.append(label)
                row = nginx_row(tmp, ngx, sink, f"nginx {a.workers}w, fixed rate {label}",
                                ("rate", rate), n, pairs)
                row["notes"] = note
                rows.append(row)
            if want("close5k"):
                rows.append(nginx_row(tmp, ngx, sink, f"nginx {a.workers}w, a connection per "
                                      "request (Connection: close), fixed rate 5k",
                                      ("close", 5000), int(5000 * secs * scale), pairs))
            if want("sat"):
                row = nginx_row(tmp, ngx, sink, f"nginx {a.workers}w, saturation (wrk -c32)",
                                ("wrk", 2 if a.quick else 5, 32), 0, pairs)
                rows.append(row)
        if want("startup"):
            rows.append(startup_row(tmp, ngx, sink))
            rows[-1]["notes"] = f"{rows[-1]['startup_s'] * 1000:.0f} ms (median of 3)"
        if want("idle"):
            rows.append(idle_row(tmp, ngx, sink, 5.0 if a.quick else 20.0))
        if want("crowded"):
            # 62 s: the scan that examines every process again comes once a
            # minute (src/discover/discover.c), and this window holds one.
            rows.append(idle_row(tmp, ngx, sink, 5.0 if a.quick else 62.0,
                                 (50, 50) if a.quick else (200, 50)))
        if want("untraced"):
            u = untraced_row(tmp, ngx, sink, pairs, int(2000000 * scale))
            u["notes"] = "; ".join(
                f"{m}: +{u[m]['ns_added']:.1f} ns/syscall ({u[m]['ns_without']:.0f} → "
                f"{u[m]['ns_with']:.0f}), BPF {u[m]['bpf_ns_per_syscall']:.1f} ns/syscall "
                f"({u[m]['bpf_runs']} runs)" for m in ("pipe", "tcp", "block"))
            u["notes"] += (f" (block: 2 of every 4 syscalls block, +"
                           f"{2 * u['block']['ns_added']:.0f} ns per blocking read)")
            il = u["interleaved"]
            if il:
                u["notes"] += "; tcp interleaved in one process (bench/untraced): " + ", ".join(
                    f"{k} programs +{il[k]['ns_added']:.1f} ns/syscall "
                    f"({il[k]['ns_added_q1']:.0f}–{il[k]['ns_added_q3']:.0f})"
                    for k in ("rastro", "noop"))
            rows.append(u)
        if want("events"):
            e = events_row(tmp, sink, int(1000000 * scale))
            e["notes"] = (f"{e['event_ns_per_run']:.0f} ns per program run with bpf_stats "
                          f"({e['event_runs']} runs), one data event each")
            rows.append(e)
        if want("pgbench") and PG_BIN:
            p = pgbench_row(tmp, sink, pairs, int(20000 * scale))
            p["notes"] = (f"client CPU µs/query; avg latency {p['lat_without']:.3f} → "
                          f"{p['lat_with']:.3f} ms")
            rows.append(p)
        if want("perl"):
            rows.append(perl_row(tmp, sink, pairs, 200, int(2000 * scale)))
        if want("redis") and shutil.which("redis-server"):
            rd = redis_row(tmp, sink, pairs, int(400000 * scale))
            rd["notes"] = (f"server CPU µs/op; {rd['events']} events sent, "
                           f"{rd['events_muted']} not sent ({rd['connections_muted']} "
                           f"connections muted); {rd['rate_without']:.0f} → {rd['rate']:.0f} op/s")
            rows.append(rd)
        if want("conns"):
            c = many_conns_row(tmp, ngx, sink, int(10000 * max(scale, 0.1)), 1000)
            c["notes"] = (f"{c['connections']} connections tracked, {c['series']} series; "
                          f"BPF maps {c['map_mb']:.1f} MB (rastro_bpf_map_bytes), of which "
                          f"{c['bpf_maps_rss_mb']:.1f} MB mapped in rastro's RSS; peak after one "
                          f"/metrics scrape of all series: {c['rss_after_scrape_mb']:.1f} MB")
            rows.append(c)
    finally:
        stop_started()
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    floor = meta.get("bpf_stats_floor_ns")
    for r in rows:
        if floor is not None and r.get("kernel_runs_per_req") is not None:
            r["kernel_ns_net"] = max(r["kernel_ns"] - r["kernel_runs_per_req"] * floor, 0)
            net = (f"in-kernel {r['kernel_ns_net']:.0f} ns/req net of the bpf_stats floor "
                   f"({r['kernel_runs_per_req']:.1f} runs × {floor:.0f} ns)")
            r["notes"] = "; ".join(x for x in (r.get("notes"), net) if x)
            # bpf_stats times a run from inside the dispatch and adds its own
            # clock reads (the floor): without it, a run costs the program's
            # own time plus the whole dispatch (an empty program's cost to a
            # syscall, measured interleaved). The total counts that.
            disp = meta.get("dispatch_ns")
            if disp is not None and r.get("added_us") is not None:
                extra = r["kernel_runs_per_req"] * (disp - floor)
                r["dispatch_extra_ns"] = extra
                r["added_us"] += extra / 1000
                r["notes"] += (f"; added CPU counts {extra:+.0f} ns/req of dispatch bpf_stats "
                               f"does not see ({r['kernel_runs_per_req']:.1f} runs × "
                               f"({disp:.0f} − {floor:.0f}) ns)")
        if floor is not None and r.get("event_ns_per_run") is not None:
            r["event_ns_net"] = max(r["event_ns_per_run"] - floor, 0)
            r["notes"] += f"; {r['event_ns_net']:.0f} ns per event net of the bpf_stats floor"
    meta["end"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    meta["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    print(f"rastro benchmark — {meta['uname']}")
    print(f"CPU: {meta['cpu']} ({meta['cpus']} CPUs); load at start {meta['loadavg']}, at end "
          f"{meta['loadavg_end']}; nginx {a.workers} worker; {pairs} alternating pairs, medians; "
          f"ebpf.hooks: {a.hooks}" + "".join(f"; {kv}" for kv in a.env))
    if meta.get("bpf_stats_floor_ns") is not None:
        print(f"bpf_stats floor (a program that does nothing, same hooks): "
              f"{meta['bpf_stats_floor_ns']:.0f} ns per run")
    if meta.get("dispatch_ns") is not None:
        print(f"dispatch (what that program costs a loopback TCP syscall, bpf_stats off, "
              f"bench/untraced --noop): {meta['dispatch_ns']:.0f} ns per run")
    print(table(rows, meta))
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
