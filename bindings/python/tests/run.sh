#!/usr/bin/env bash
# Python tests over the package as pip installs it:
#   1. a venv at <repo>/.build/pyvenv reusing the machine's packages (numpy);
#   2. pip install <repo>/bindings/python (builds libperformer.so and the extension);
#   3. pytest from a directory where the source tree's `performer` is not importable.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
venv="$repo/.build/pyvenv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv"
    "$python" -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import numpy, pytest" 2>/dev/null; then
    echo "== installing numpy and pytest into the venv"
    "$py" -m pip install -q numpy pytest
fi

echo "== pip install $repo/bindings/python"
# pip builds in place: drop setuptools' cached objects so the extension is always rebuilt
# against the current header.
rm -rf "$repo/bindings/python/build"
# --force-reinstall: rebuild even when the version is unchanged; --no-deps: numpy is there.
"$py" -m pip install -q --force-reinstall --no-deps "$repo/bindings/python"

echo "== pytest (installed package)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$py" -c "import performer, os, sys; print('testing', os.path.dirname(performer.__file__), 'libperformer', performer.__version__)"
PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -q -p no:cacheprovider "$here" "$@"
