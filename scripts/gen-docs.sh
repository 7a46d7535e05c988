#!/usr/bin/env bash
# Regenerates the settings table of docs/configuration.md from the settings
# table compiled into rastro (`rastro --config-reference`), between the
# markers. tests/test_docs.py fails when the two differ.
set -euo pipefail
cd "$(dirname "$0")/.."
doc=docs/configuration.md
table=$(./rastro --config-reference)
python3 - "$doc" "$table" <<'PY'
import sys
doc, table = sys.argv[1], sys.argv[2]
text = open(doc).read()
start, end = "<!-- settings:begin -->", "<!-- settings:end -->"
a, b = text.index(start) + len(start), text.index(end)
open(doc, "w").write(text[:a] + "\n" + table.rstrip("\n") + "\n" + text[b:])
PY
echo "updated $doc"
