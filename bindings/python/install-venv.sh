#!/usr/bin/env bash
# Makes <repo>/.build/pyvenv (reusing the machine's packages, e.g. numpy), pip-installs the
# package from bindings/python into it, and prints the venv's python path on the last line.
# Used by the tests (tests/run.sh) and the demo (examples/demo.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.build/pyvenv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv" >&2
    "$python" -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import numpy, pytest" 2>/dev/null; then
    echo "== installing numpy and pytest into the venv" >&2
    "$py" -m pip install -q numpy pytest >&2
fi

echo "== pip install $repo/bindings/python" >&2
# pip builds in place: drop setuptools' cached objects so the extension is always rebuilt
# against the current header.
rm -rf "$repo/bindings/python/build"
# --force-reinstall: rebuild even when the version is unchanged; --no-deps: numpy is there.
"$py" -m pip install -q --force-reinstall --no-deps "$repo/bindings/python" >&2
echo "$py"
