#!/usr/bin/env bash
# Python tests over the package as pip installs it:
#   1-2. install-venv.sh: a venv at <repo>/.build/pyvenv with the package pip-installed;
#   3. install-test-deps.sh: PyTorch and transformers in that venv (the torch tests must run:
#      PERFORMER_REQUIRE_TORCH=1 turns their skip into a failure);
#   4. pytest from a directory where the source tree's `performer` is not importable.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
py="$(bash "$repo/bindings/python/install-venv.sh" | tail -n 1)"
bash "$here/install-test-deps.sh" "$py"
export PERFORMER_REQUIRE_TORCH=1

echo "== pytest (installed package)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$py" -c "import performer, os, sys; print('testing', os.path.dirname(performer.__file__), 'libperformer', performer.__version__)"
PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -q -p no:cacheprovider "$here" "$@"
