"""The documentation cannot drift from the code: the settings reference is the
one rastro prints, and every metric the code defines is in docs/metrics.md."""
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
