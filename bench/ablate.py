#!/usr/bin/env python3
"""What each part of a traced event costs in the kernel.

    sudo bench/ablate.py [--workload nginx|pgbench] [--rounds N] VARIANT...

Copies the working tree (tracked files), applies bench/ablate.patch and
builds rastro once plainly (the base) and once per VARIANT with
-DABL_<VARIANT> (see the patch for the list). Then, in alternating order for
--rounds rounds, each build traces the workload on its own with bpf_stats on:
nginx at 20,000 requests/s for 200,000 requests, or pgbench select-only for
20,000 queries. Prints each build's programs' run_time_ns per request (raw:
bpf_stats' own clock reads included), per program and in all, and the
difference from the base. An experiment, not a bench row: several variants
report nothing (NOCOPY, NORING, EARLY1, EARLY2), and none is ever shipped.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KNOWN = ("NOCOPY", "CAP64", "IOVONLY", "EXTRA", "NOTIME", "NORING", "NOSTATS", "HOLDALL",
         "EARLY1", "EARLY2")


def build(src, name, define):
    """Builds rastro from the patched copy src into src/build-NAME/rastro."""
    out = src / f"build-{name}" / "rastro"
    cmd = ["make", "-s", "-j2", "-C", str(src), f"BUILD=build-{name}", f"OUT={out}"]
    if define:
        cmd.append(f"BPF_EXTRA=-D{define}")
    B.log(f"building {name}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def prog_names():
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: p.get("name", "?") for p in json.loads(out)}


def per_program(before, after, names, n):
    res = {}
    for k, (rt, cnt) in after.items():
        rt0, cnt0 = before.get(k, (0, 0))
        if cnt - cnt0:
            res[names.get(k, str(k))] = {"ns_per_req": (rt - rt0) / n,
                                         "runs_per_req": (cnt - cnt0) / n}
    return res


def nginx_round(tmp, binary, sink, ngx):
    B.RASTRO = binary
    r = B.start_traced_rastro(tmp, sink, ngx.proc.pid, ngx.port, "nginx")
    try:
        B.loadgen(ngx.port, 1000, 2000)  # warm-up
        names = prog_names()
        with B.BpfStats():
            b1 = r.bpf_progs()
            n = B.loadgen(ngx.port, 20000, 200000)["completed"]
            b2 = r.bpf_progs()
    finally:
        r.stop()
    return per_program(b1, b2, names, max(n, 1))


def pgbench_round(tmp, binary, sink, pg):
    B.RASTRO = binary
    cfg = B.rastro_config(f"    - exe_path: \"{B.PG_BIN}/pgbench\"\n      name: pgbench\n"
                          "      namespace: bench\n")
    r = B.Rastro(tmp, cfg, sink=sink)
    try:
        r.wait_started()
        names = prog_names()
        with B.BpfStats():
            b1 = r.bpf_progs()
            n = pg.pgbench(20000)["transactions"]
            b2 = r.bpf_progs()
    finally:
        r.stop()
    return per_program(b1, b2, names, max(n, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("nginx", "pgbench"), default="nginx")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("variants", nargs="+", metavar="VARIANT")
    a = ap.parse_args()
    bad = [v for v in a.variants if v not in KNOWN]
    if bad:
        sys.exit(f"ablate: unknown variant {', '.join(bad)} (known: {', '.join(KNOWN)})")
    if os.geteuid() != 0:
        sys.exit("ablate: needs root to load BPF programs")
    if a.workload == "pgbench" and not B.PG_BIN:
        sys.exit("ablate: pgbench not found (apt-get install postgresql)")

    tmp = Path(tempfile.mkdtemp(prefix="rastro-ablate-"))
    os.chmod(tmp, 0o755)
    src = tmp / "src-copy"
    src.mkdir()
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                           check=True).stdout
    tar = subprocess.Popen(["tar", "-C", str(ROOT), "--null", "-T", "-", "-cf", "-"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    untar = subprocess.Popen(["tar", "-C", str(src), "-xf", "-"], stdin=tar.stdout)
    tar.stdout.close()
    tar.communicate(files)
    if untar.wait() or tar.returncode:
        sys.exit("ablate: could not copy the tree")
    patch = subprocess.run(["git", "apply", str(ROOT / "bench" / "ablate.patch")], cwd=src,
                           capture_output=True, text=True)
    if patch.returncode:
        sys.exit("ablate: bench/ablate.patch no longer applies to src/bpf/rastro.bpf.c "
                 f"(update it):\n{patch.stderr}")
    builds = {"base": build(src, "base", None)}
    for v in a.variants:
        builds[v] = build(src, v, f"ABL_{v}")

    sink = B.Sink()
    results = {name: [] for name in builds}
    try:
        if a.workload == "nginx":
            target = B.Nginx(tmp, 1)
            run = nginx_round
        else:
            target = B.Postgres(tmp)
            target.pgbench(200)  # warm the server's caches
            run = pgbench_round
        order = list(builds)
        for i in range(a.rounds):
            for name in (order if i % 2 == 0 else order[::-1]):
                res = run(tmp, builds[name], sink, target)
                results[name].append(res)
                B.log(f"{name} round {i + 1}: {sum(p['ns_per_req'] for p in res.values()):.0f} "
                      f"ns per request")
    finally:
        B.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)

    unit = "query" if a.workload == "pgbench" else "request"
    base = B.median([sum(p["ns_per_req"] for p in r.values()) for r in results["base"]])
    print(f"\n{a.workload}: programs' ns per {unit} with bpf_stats (raw), median of "
          f"{a.rounds} rounds\n")
    print(f"| build | ns per {unit} | vs base | per program (runs × ns) |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        total = B.median([sum(p["ns_per_req"] for p in r.values()) for r in rounds])
        progs = sorted({k for r in rounds for k in r})
        detail = ", ".join(
            f"{k.removeprefix('rastro_')} "
            f"{B.median([r[k]['runs_per_req'] for r in rounds if k in r]):.2f} × "
            f"{B.median([r[k]['ns_per_req'] / r[k]['runs_per_req'] for r in rounds if k in r]):.0f}"
            for k in progs if B.median([r[k]['runs_per_req'] for r in rounds if k in r]) >= 0.01)
        print(f"| {name} | {total:.0f} | {total - base:+.0f} | {detail} |")


if __name__ == "__main__":
    main()
