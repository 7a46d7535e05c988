#!/usr/bin/env python3
"""Where nginx's CPU goes with and without rastro, at saturation.

    bench/run.sh --profile [--rounds 2] [--seconds 8] [--top 15]

One nginx worker under wrk -c32 (the bench's saturation row), alternately
without rastro and with it tracing nginx; `perf record` samples the worker
(cpu-clock, 1999 Hz) for each run. The report gives the worker's CPU per
request, sampled, split into what rastro adds: its programs and the
tracepoints' dispatch, the reads of user memory (bpf_probe_read_user, with
the kernel's usercopy checks), the clock reads, and the regions run with
interrupts off (a guest's cpu-clock sample cannot land there: it lands
where they are enabled again, in _raw_spin_unlock_irqrestore, which so
stands for wakeups, timers and ring buffer reservations); the interprocessor
interrupts per 1,000 requests, from /proc/interrupts (CAL: a remote wakeup
of a task whose CPU is idle; IWI: irq_work, rastro's ring buffer wakeups);
then the symbols whose time per request grew most, and the callers of
_raw_spin_unlock_irqrestore whose time grew most. Needs perf (Debian:
linux-perf).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

CATEGORIES = [
    ("rastro's programs and the tracepoints' dispatch",
     lambda s: s.startswith(("bpf_", "__bpf_trace", "__traceiter_"))
     or s == "task_init_private_helper_slot"),
    ("reads of user memory (with usercopy checks)",
     lambda s: s in ("copy_from_user_nofault", "__check_object_size", "__virt_addr_valid",
                     "check_stack_object", "__check_heap_object")),
    ("clock reads", lambda s: s in ("read_tsc", "ktime_get_mono_fast_ns")),
    ("interrupts-off regions (wakeups, timers, ring buffer)",
     lambda s: s == "_raw_spin_unlock_irqrestore"),
]


def symbols(data):
    """ns sampled per symbol in a perf.data file (cpu-clock: the event count is ns)."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                          "-g", "none", "--sort", "symbol"],
                         capture_output=True, text=True, check=True).stdout
    total = float(re.search(r"Event count \(approx.\): (\d+)", out).group(1))
    ns = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[.\]\s+(\S+)", line)
        if m:
            ns[m.group(2)] = ns.get(m.group(2), 0.0) + float(m.group(1)) / 100 * total
    return ns


def interrupts():
    """Interprocessor interrupts so far, summed over the CPUs."""
    n = {}
    with open("/proc/interrupts") as f:
        for line in f:
            p = line.split()
            if p and p[0] in ("CAL:", "IWI:", "RES:"):
                n[p[0][:-1]] = sum(int(x) for x in p[1:] if x.isdigit())
    return n


def irqoff_callers(data):
    """ns sampled per caller chain (3 frames) of _raw_spin_unlock_irqrestore."""
    out = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True, text=True,
                         check=True).stdout
    period = None
    ns = {}
    for blk in out.split("\n\n"):
        lines = blk.strip().split("\n")
        m = re.search(r"(\d+) cpu-clock", lines[0])
        if m:
            period = int(m.group(1))
        frames = [x.split()[1].split("+")[0] for x in lines[1:] if len(x.split()) > 1]
        if period and frames and frames[0] == "_raw_spin_unlock_irqrestore":
            key = " < ".join(frames[1:4])
            ns[key] = ns.get(key, 0) + period
    return ns


def run(tmp, ngx, worker, sink, with_rastro, seconds, out):
    r = None
    if with_rastro:
        r = B.start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
        time.sleep(1)
    perf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "-o", str(out), "-p",
                             str(worker)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    c0, i0 = B.cpu_s([worker]), interrupts()
    w = B.wrk(ngx.port, seconds, 32)
    cpu, i1 = B.cpu_s([worker]) - c0, interrupts()
    perf.send_signal(2)
    perf.wait()
    if r:
        r.stop()
    ns = symbols(out)
    res = {"rate": w["rate"], "requests": w["sent"], "cpu_us": cpu / w["sent"] * 1e6,
           "per_req": {k: v / w["sent"] for k, v in ns.items()},
           "irqoff": {k: v / w["sent"] for k, v in irqoff_callers(out).items()},
           "ipi": {k: (i1[k] - i0.get(k, 0)) / w["sent"] * 1000 for k in i1}}
    B.log(f"{'with' if with_rastro else 'without'}: {w['rate']:.0f} req/s, nginx "
          f"{res['cpu_us']:.2f} µs/req, {sum(res['per_req'].values()):.0f} ns/req sampled")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("profile: needs perf (Debian: apt-get install linux-perf)")
    tmp = tempfile.mkdtemp(prefix="rastro-profile-")
    os.chmod(tmp, 0o755)
    sink = B.Sink()
    ngx = B.Nginx(tmp, 1)
    runs = {False: [], True: []}
    try:
        worker = B.children(ngx.proc.pid)[0]
        B.wrk(ngx.port, 2, 32)  # warm-up
        for i in range(a.rounds):
            for w in ((False, True) if i % 2 == 0 else (True, False)):
                runs[w].append(run(tmp, ngx, worker, sink, w, a.seconds,
                                   Path(tmp) / f"perf-{i}-{int(w)}.data"))
    finally:
        B.stop_started()  # nginx, the sink, and a rastro a failed run left
    wo, wi = runs[False], runs[True]

    def per_req(rs, sym):
        return statistics.median(r["per_req"].get(sym, 0.0) for r in rs)

    def cat(rs, f):
        return statistics.median(sum(v for s, v in r["per_req"].items() if f(s)) for r in rs)

    rate = [b["rate"] / a_["rate"] for a_, b in zip(wo, wi)]
    print(f"\nnginx, 1 worker, wrk -c32, {a.seconds} s per run, {a.rounds} runs each "
          f"(medians): {statistics.median(x['rate'] for x in wo):.0f} req/s without, "
          f"{statistics.median(x['rate'] for x in wi):.0f} with "
          f"({statistics.median(rate) * 100:.1f}%); worker CPU "
          f"{statistics.median(x['cpu_us'] for x in wo):.2f} -> "
          f"{statistics.median(x['cpu_us'] for x in wi):.2f} µs/req\n")
    print("| worker's time per request, sampled | without ns | with ns | added ns |")
    print("|---|---|---|---|")
    named = 0.0
    for name, f in CATEGORIES:
        x, y = cat(wo, f), cat(wi, f)
        named += y - x
        print(f"| {name} | {x:.0f} | {y:.0f} | {y - x:+.0f} |")
    x = statistics.median(sum(r["per_req"].values()) for r in wo)
    y = statistics.median(sum(r["per_req"].values()) for r in wi)
    print(f"| everything else | | | {y - x - named:+.0f} |")
    print(f"| all | {x:.0f} | {y:.0f} | {y - x:+.0f} |")
    syms = set().union(*(r["per_req"] for r in wo + wi))
    grown = sorted(((per_req(wi, s) - per_req(wo, s), s) for s in syms), reverse=True)
    print("\ninterprocessor interrupts per 1,000 requests (all CPUs): " + ", ".join(
        f"{k} {statistics.median(r['ipi'].get(k, 0) for r in wo):.1f} -> "
        f"{statistics.median(r['ipi'].get(k, 0) for r in wi):.1f}" for k in ("CAL", "IWI", "RES")))
    print("\nsymbols whose time per request grew most (ns):")
    for d, s in grown[:a.top]:
        print(f"  {d:+7.0f}  {s} ({per_req(wo, s):.0f} -> {per_req(wi, s):.0f})")

    def off(rs, k):
        return statistics.median(r["irqoff"].get(k, 0.0) for r in rs)
    keys = set().union(*(r["irqoff"] for r in wo + wi))
    print("\n_raw_spin_unlock_irqrestore by caller, ns per request (most grown first):")
    for d, k in sorted(((off(wi, k) - off(wo, k), k) for k in keys), reverse=True)[:5]:
        print(f"  {d:+7.0f}  {k} ({off(wo, k):.0f} -> {off(wi, k):.0f})")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
