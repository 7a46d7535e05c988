"""The soak test's short form, for CI: mixed traffic (nginx, the seed's Perl
app behind it, PostgreSQL and Redis clients) under one rastro, then exact
accounting of spans and metrics and the RSS bound (tests/soak/soak.py).

rastro keeps trace contexts for 60 s (cross-process links), so its memory
reaches its plateau after about a minute and a half at these rates: the short
form warms up 90 s and measures 60 s. RASTRO_SOAK_SECONDS, RASTRO_SOAK_WARMUP
and RASTRO_SOAK_SCALE change it; the 10-minute form is
`python3 tests/soak/soak.py --seconds 600` (docs/testing.md)."""
import os
import shutil

import pytest

from conftest import needs_root

import soak

pytestmark = [needs_root,
              pytest.mark.skipif(not shutil.which("node"), reason="node is not installed"),
              pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")]


def test_soak_short():
    seconds = int(os.environ.get("RASTRO_SOAK_SECONDS", "150"))
    warmup = int(os.environ.get("RASTRO_SOAK_WARMUP", "90"))
    scale = float(os.environ.get("RASTRO_SOAK_SCALE", "0.5"))
    res = soak.run(seconds, warmup, scale)
    failed = [c for c in res["checks"] if not c["ok"]]
    assert res["checks"] and not failed, failed
