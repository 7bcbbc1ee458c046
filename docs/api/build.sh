#!/usr/bin/env bash
# Builds the API reference from the sources: docs/api/C.md from include/performer.h and
# docs/api/Python.md from the performer package's docstrings (docs/api/generate.py).
# The package is pip-installed into .build/pyvenv first (bindings/python/install-venv.sh),
# unless PYTHON names an interpreter that imports it already. `--check` only reports whether
# the committed files are current. The Swift API is documented in its sources' /// comments
# (Xcode and SourceKit-LSP show them); no DocC catalog is generated yet.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then py="$(bash "$repo/bindings/python/install-venv.sh" | tail -n 1)"; fi
"$py" "$repo/docs/api/generate.py" "$@"
