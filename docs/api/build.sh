#!/usr/bin/env bash
# Builds the API reference from the sources: docs/api/C.md from include/performer.h and
# docs/api/Python.md from the performer package's docstrings (docs/api/generate.py), then the
# Swift reference with DocC (docs/api/build-swift.sh: docs/api/Swift.md, an index of every public
# symbol, and the DocC site in .build/docs/PerformerCore). The package is pip-installed into
# .build/pyvenv first (bindings/python/install-venv.sh), unless PYTHON names an interpreter that
# imports it already. `--check` only reports whether the committed files are current (the DocC
# site is built either way: it is not committed). Every step fails on an undocumented function,
# name or symbol, and DocC on any warning.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then py="$(bash "$repo/bindings/python/install-venv.sh" | tail -n 1)"; fi
"$py" "$repo/docs/api/generate.py" "$@"
bash "$repo/docs/api/build-swift.sh" "$@"
