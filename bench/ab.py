#!/usr/bin/env python3
"""Side by side: two rastro builds trace the same nginx at the same time.

    bench/run.sh --ab OLD_BINARY NEW_BINARY [--rounds 5] [--rate 20000]
                      [--requests 300000] [--kernel] [--close]

Both rastros instrument one nginx (one worker) and see the same requests;
each round, bench/loadgen sends `requests` at `rate` (with --close, each
on a connection of its own: Connection: close), and each rastro's CPU
time comes from /proc/PID/schedstat (nanoseconds, where /proc/PID/stat counts
10 ms ticks) until it reported them all. Two builds measured in the same
windows share the host's noise, which on a shared VM moves a figure by 10 to
40% between runs minutes apart; their ratio moves by a few percent.

The second rastro to start pays a few percent more than the first (same
binary against itself: 1.03 to 1.05 on the reference VM), so the run is made
twice, OLD started first and then NEW first, and the ratio NEW/OLD is
sqrt(r1 / r2) of the two orders' median ratios (the position factor cancels).
With --kernel it compares the in-kernel cost instead: bpf_stats on for the
whole run, each rastro's own programs' run_time_ns per request. Both sets
of programs run on every event, one after the other (the second finds the
socket's lines in the cache), which the two orders cancel the same way. The
figures include bpf_stats' own clock reads (bench/run.sh reports that floor)
and the load generator's untraced runs: compare them with each other, not
with bench/run.sh's.
"""
import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402


def run_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def wakeups(pid):
    return B.status_kb(pid, "voluntary_ctxt_switches")  # any integer field


def one_order(first, second, args):
    """Rounds with `first` started before `second`: per-request ns of each."""
    tmp = tempfile.mkdtemp(prefix="rastro-ab-")
    B.STARTED.clear()
    try:
        ngx = B.Nginx(tmp, 1)
        rs = []
        for binary in (first, second):
            B.RASTRO = Path(binary)
            rs.append(B.start_traced_rastro(tmp, B.Sink(), ngx.proc.pid, ngx.port, "nginx"))
        B.loadgen(ngx.port, 1000, 2000)  # warm-up: connections, routes, series
        time.sleep(1.0)
        out = [[], []]
        for k in range(args.rounds):
            base = [r.requests() for r in rs]
            t0 = [run_ns(r.pid) for r in rs]
            w0 = [wakeups(r.pid) for r in rs]
            k0 = [r.bpf_progs() for r in rs]
            lg = B.loadgen(ngx.port, args.rate, args.requests, conns=64 if args.close else 16,
                           close=args.close)
            k1 = [r.bpf_progs() for r in rs]
            got = [B.settle_records(r, lg["completed"], b, quiet=1.0) for r, b in zip(rs, base)]
            t1 = [run_ns(r.pid) for r in rs]
            w1 = [wakeups(r.pid) for r in rs]
            losses = [B.Rastro.losses(r.metrics()) for r in rs]
            cells = []
            for j in (0, 1):
                if args.kernel:
                    out[j].append(B.kernel_ns(k0[j], k1[j])[0] / lg["completed"])
                else:
                    out[j].append((t1[j] - t0[j]) / lg["completed"])
                cells.append(f"{out[j][-1]:6.0f} ns/req, {got[j]} records, "
                             f"{w1[j] - w0[j]} wakeups, losses {losses[j] or 0}")
            print(f"  round {k + 1}: first {cells[0]} | second {cells[1]} | "
                  f"second/first {out[1][-1] / out[0][-1]:.3f}", flush=True)
        return out
    finally:
        B.stop_started()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=300000)
    ap.add_argument("--kernel", action="store_true",
                    help="compare the programs' run_time_ns (bpf_stats on) instead")
    ap.add_argument("--close", action="store_true",
                    help="a connection per request (Connection: close)")
    args = ap.parse_args()
    for b in (args.old, args.new):
        if not os.access(b, os.X_OK):
            sys.exit(f"ab: {b}: not an executable")
    print(f"ab: OLD {args.old}\nab: NEW {args.new}\n"
          f"ab: nginx, {args.requests} requests at {args.rate}/s per round"
          f"{', a connection each' if args.close else ''}, "
          f"{args.rounds} rounds per order", flush=True)
    what = "in-kernel (bpf_stats)" if args.kernel else "rastro CPU"
    stats = B.BpfStats() if args.kernel else contextlib.nullcontext()
    with stats:
        print("order 1: OLD started first")
        o1 = one_order(args.old, args.new, args)
        print("order 2: NEW started first")
        o2 = one_order(args.new, args.old, args)
    r1 = B.median([b / a for a, b in zip(*o1)])
    r2 = B.median([b / a for a, b in zip(*o2)])
    old = B.median(o1[0] + o2[1])
    new = B.median(o1[1] + o2[0])
    print(f"{what} per request, median of both orders: OLD {old:.0f} ns, NEW {new:.0f} ns")
    print(f"second/first: {r1:.3f} (NEW second), {r2:.3f} (OLD second); "
          f"position factor {math.sqrt(r1 * r2):.3f}")
    print(f"NEW/OLD = {math.sqrt(r1 / r2):.3f}")


if __name__ == "__main__":
    main()
