"""Helpers shared by the reliability, security and soak tests: rastro's
kernel objects (from its own file descriptors and bpftool), its
self-metrics (parsed from its Prometheus endpoint), RSS. (Named test_* to
sit with the tests it serves; it holds no test.)"""
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path


def bpftool_json(*args):
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"bpftool {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout or "null")


def bpf_objects(pid):
    """{"prog": ids, "map": ids, "link": ids} that process pid holds, read
    from /proc/PID/fdinfo (the kernel's own word), plus the maps its programs
    use."""
    out = {"prog": set(), "map": set(), "link": set()}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "bpf" not in target:
            continue
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        for kind in ("link", "prog", "map"):
            m = re.search(rf"^{kind}_id:\s+(\d+)", info, re.M)
            if m:
                out[kind].add(int(m.group(1)))
                break
    for prog in bpftool_json("prog", "show"):
        if prog["id"] in out["prog"]:
            out["map"].update(prog.get("map_ids", []))
    return out


def recursion_misses(prog_ids):
    """Runs of these programs the kernel skipped because the program was
    already running on that CPU (bpftool shows the field when it is not 0)."""
    return sum(p.get("recursion_misses", 0) for p in bpftool_json("prog", "show")
               if p["id"] in prog_ids)


def live_bpf_ids():
    """Every program, map and link id the kernel has now."""
    return {"prog": {p["id"] for p in bpftool_json("prog", "show")},
            "map": {m["id"] for m in bpftool_json("map", "show")},
            "link": {k["id"] for k in bpftool_json("link", "show")}}


def map_id_by_name(objs, name):
    ids = [m["id"] for m in bpftool_json("map", "show") if m["id"] in objs["map"]
           and m.get("name") == name]
    assert len(ids) == 1, (name, ids)
    return ids[0]


def _raw(field):
    """A key or value as bpftool -j prints it raw: a list of "0x.." strings."""
    return bytes(int(b, 16) for b in field)


def map_entries(map_id):
    """The entries of a map. An entry deleted between bpftool's walk to its
    key and its lookup is printed with {"error": ...} as value: it is gone,
    and left out."""
    return [e for e in bpftool_json("map", "dump", "id", str(map_id)) or []
            if isinstance(e.get("value"), list)]


def map_keys_u32(map_id):
    """Keys of a hash map with __u32 keys (the traced map: tgids)."""
    return [int.from_bytes(_raw(e["key"])[:4], "little") for e in map_entries(map_id)]


def conns_tgids(map_id):
    """The tgid of every entry of the conns map (struct rastro_conn: conn_id
    is 8 bytes, then the __u32 tgid)."""
    return [int.from_bytes(_raw(e["value"])[8:12], "little") for e in map_entries(map_id)]


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def self_metrics(port):
    return parse_metrics(scrape(port))


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
