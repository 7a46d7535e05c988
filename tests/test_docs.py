"""The documentation cannot drift from the code: the settings reference is the
one rastro prints, every metric the code defines is in docs/metrics.md, and
every docs/ or deploy/ path the READMEs and deploy/ files name exists. Nor can
the benchmark's ablation patch (docs/performance.md): it still applies to the
BPF programs, and every variant it defines compiles."""
import os
import re
import subprocess
from pathlib import Path

from conftest import RASTRO, ROOT


def test_configuration_reference_matches_the_settings_table():
    table = subprocess.run([str(RASTRO), "--config-reference"], capture_output=True, text=True,
                           check=True).stdout.rstrip("\n")
    doc = (ROOT / "docs" / "configuration.md").read_text()
    section = doc.split("<!-- settings:begin -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert section == table, "docs/configuration.md is out of date: run scripts/gen-docs.sh"


def test_help_lists_every_setting():
    help_text = subprocess.run([str(RASTRO), "--help"], capture_output=True, text=True,
                               check=True).stdout
    table = subprocess.run([str(RASTRO), "--config-reference"], capture_output=True, text=True,
                           check=True).stdout
    keys = re.findall(r"^\| `([a-z0-9_.]+)`", table, re.M)
    assert len(keys) > 40
    for k in keys:
        assert k in help_text, k


def test_every_metric_is_documented():
    src = (ROOT / "src" / "metrics" / "metrics.c").read_text()
    selfsrc = (ROOT / "src" / "metrics" / "self_metrics.c").read_text()
    doc = (ROOT / "docs" / "metrics.md").read_text()
    names = re.findall(r'"([a-z_]+_(?:seconds|bytes))"', src)
    names += [n for n in re.findall(r'"(rastro_[a-z_]+)"', selfsrc)]
    assert len(names) > 20
    for n in names:
        assert n in doc, n
    for n in re.findall(r'\{"([a-z]+\.[a-z_.]+)", "(?:s|By)"', src):
        assert f"`{n}`" in doc, n


# Paths that the documentation tells the reader to create, not ones it points to.
GENERATED = {"deploy/btf/vmlinux.h"}
# A docs/*.md or deploy/... path, not inside a longer path (/usr/src/app, ../deploy).
REPO_PATH = re.compile(r"(?<![\w./-])((?:docs/[\w.-]+\.md)|(?:deploy(?:/[\w.*-]+)+))")


def mentioned_paths(text):
    for m in REPO_PATH.finditer(text):
        yield m.group(1).rstrip(".")


def test_paths_named_in_readmes_and_deploy_exist():
    sources = [ROOT / "README.md", ROOT / "README.pt-BR.md"]
    sources += sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    checked, missing = set(), {}
    for src in sources:
        try:
            text = src.read_text()
        except UnicodeDecodeError:
            continue
        for path in mentioned_paths(text):
            if path in GENERATED:
                continue
            checked.add(path)
            if not (ROOT / path).exists():
                missing.setdefault(path, []).append(str(src.relative_to(ROOT)))
    assert "docs/configuration.md" in checked and "deploy/docker-compose.yml" in checked
    assert not missing, "named but missing: " + "; ".join(
        f"{path} (in {', '.join(sorted(set(srcs)))})" for path, srcs in sorted(missing.items()))


def test_deploy_readme_table_names_existing_files():
    """deploy/README.md's first table lists its directory's files, relative to it."""
    text = (ROOT / "deploy" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|", text.split("\n\n## ", 1)[0], re.M)
    assert len(rows) >= 5
    for name in rows:
        assert (ROOT / "deploy" / name).exists(), name


def test_path_pattern():
    text = ("see docs/configuration.md. and (deploy/kubernetes/) or `deploy/btf/vmlinux.h`, "
            "not /usr/src/app nor ../deploy/x nor mydocs/a.md")
    assert list(mentioned_paths(text)) == ["docs/configuration.md", "deploy/kubernetes",
                                           "deploy/btf/vmlinux.h"]


def test_bench_ablation_patch_applies_and_every_variant_compiles(tmp_path):
    bpf = tmp_path / "src" / "bpf"
    bpf.mkdir(parents=True)
    for f in ("rastro.bpf.c", "rastro.h"):
        (bpf / f).write_bytes((ROOT / "src" / "bpf" / f).read_bytes())
    patch = ROOT / "bench" / "ablate.patch"
    r = subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, f"bench/ablate.patch no longer applies: {r.stderr}"
    patched = (bpf / "rastro.bpf.c").read_text()
    variants = re.findall(r"^  ([A-Z0-9]+) ", patch.read_text(), re.M)
    variants += re.findall(r"^  [A-Z0-9]+ .{2,}?  +([A-Z0-9]+) ", patch.read_text(), re.M)
    assert len(set(variants)) == 10, variants
    vmlinux = ROOT / "build" / "vmlinux.h"
    assert vmlinux.exists(), "build/vmlinux.h missing: run make first"
    arch = {"x86_64": "x86", "aarch64": "arm64"}[os.uname().machine]
    for v in sorted(set(variants)):
        assert f"ABL_{v}" in patched, v
        r = subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-mcpu=v3",
                            f"-D__TARGET_ARCH_{arch}", "-Wall", "-Werror", f"-DABL_{v}",
                            f"-I{vmlinux.parent}", f"-I{bpf}", "-c", str(bpf / "rastro.bpf.c"),
                            "-o", str(tmp_path / f"{v}.o")], capture_output=True, text=True)
        assert r.returncode == 0, f"variant {v} does not compile:\n{r.stderr}"
