"""Runs the C unit tests (ASan + UBSan) and each libFuzzer target for a bounded
time (RASTRO_FUZZ_SECONDS, default 15), from a fixed random seed
(RASTRO_FUZZ_SEED, default 1; 0 lets libFuzzer pick one): a test run explores
the same inputs every time, so a finding fails every run that gets that far,
not one run in many. Exploring is the long run's job (docs/testing.md)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("RASTRO_BUILD", "build")
UNIT = sorted(p.stem for p in (ROOT / "tests" / "unit").glob("test_*.c"))
FUZZ = sorted(p.stem for p in (ROOT / "tests" / "fuzz").glob("fuzz_*.c"))


@pytest.mark.parametrize("name", UNIT)
def test_unit(name):
    binary = BUILD / "unit" / name
    assert binary.exists(), f"{binary} was not built (make unit-bins)"
    r = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", FUZZ)
def test_fuzz(name, tmp_path):
    binary = BUILD / "fuzz" / name
    assert binary.exists(), f"{binary} was not built (make fuzz-bins)"
    corpus = tmp_path / "corpus"
    seeds = ROOT / "tests" / "fuzz" / "corpus" / name
    if seeds.is_dir():
        shutil.copytree(seeds, corpus)
    else:
        corpus.mkdir()
    secs = os.environ.get("RASTRO_FUZZ_SECONDS", "15")
    seed = os.environ.get("RASTRO_FUZZ_SEED", "1")
    r = subprocess.run([str(binary), f"-max_total_time={secs}", f"-seed={seed}", "-timeout=10",
                        "-rss_limit_mb=1024", "-print_final_stats=1", str(corpus)],
                       capture_output=True, text=True, timeout=int(secs) + 120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Done" in r.stderr and "runs in" in r.stderr, r.stderr[-2000:]
