#!/usr/bin/env bash
# The Python wheel as a user without Swift gets it: bindings/python/build-wheel.sh builds and
# auditwheel-repairs ONE wheel for every CPython >= 3.9 (stable ABI, tag cp39-abi3); then this
# checks the tags (file name and `auditwheel show`), that the extensions are abi3 builds, that the
# bundled libperformer.so is stripped and needs no Swift library, and installs the wheel into fresh
# venvs (no system site-packages) of the oldest and the newest CPython >= 3.9 found (pyenv's
# versions and python3.N on PATH; PERFORMER_WHEEL_PYTHONS="py1 py2 ..." overrides the search),
# running the NumPy tests there in a clean environment whose PATH holds no Swift toolchain
# (`env -i`; torch is not installed there, so its tests skip). On CPython 3.9/3.10 the extension
# reads arrays through __array_struct__, from 3.11 on through the buffer protocol: checked too.
# Arguments are passed to pytest (default: the NumPy test files listed in numpy_tests below).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -f "$repo"/dist/libperformer-*.whl
wheel="$(bash "$repo/bindings/python/build-wheel.sh" | tail -n 1)"
name="${wheel##*/}"
echo "== wheel: $name ($(du -k "$wheel" | cut -f1) KiB)"
[[ "$name" =~ -cp39-abi3-manylinux_2_([0-9]+)_x86_64(\.manylinux[a-z0-9_]+)*\.whl$ ]] || { echo "not tagged cp39-abi3 manylinux: $name"; exit 1; }
# glibc 2.31 at most (Sources/CPerformerGlibcCompat binds the Swift runtime's 2.33/2.34 symbols).
[ "${BASH_REMATCH[1]}" -le 31 ] || { echo "tagged manylinux_2_${BASH_REMATCH[1]}, newer than manylinux_2_31: $name"; exit 1; }
# auditwheel wraps its sentences: join the lines before matching.
"$repo/.build/wheel-venv/bin/auditwheel" show "$wheel" 2>/dev/null | tr -s ' \n' ' ' > "$work/show.txt"
grep -qE 'is consistent with the following platform tag: "manylinux_2_([0-9]|[12][0-9]|3[01])_x86_64"' "$work/show.txt" || { cat "$work/show.txt"; exit 1; }

"$repo/.build/wheel-venv/bin/python" -m zipfile -e "$wheel" "$work/unpacked"
so="$work/unpacked/performer/libperformer.so"
[ -f "$so" ] || { echo "no performer/libperformer.so in the wheel"; exit 1; }
if readelf -S -W "$so" | grep -qE '\.symtab|\.debug_'; then echo "libperformer.so in the wheel is not stripped"; exit 1; fi
if readelf -d "$so" | grep NEEDED | grep -qi swift; then echo "libperformer.so in the wheel needs a Swift library"; exit 1; fi
echo "== bundled libperformer.so: $(du -k "$so" | cut -f1) KiB, stripped, no libswift"

for ext in _performer _openmp; do
    [ -f "$work/unpacked/performer/$ext.abi3.so" ] || { echo "no performer/$ext.abi3.so in the wheel"; ls "$work/unpacked/performer"; exit 1; }
done

# The interpreters: the oldest and the newest CPython >= 3.9 available.
declare -A by_version=()
if [ -n "${PERFORMER_WHEEL_PYTHONS:-}" ]; then
    candidates=($PERFORMER_WHEEL_PYTHONS)
else
    candidates=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/python3)
    for minor in 9 10 11 12 13 14 15; do
        command -v "python3.$minor" >/dev/null 2>&1 && candidates+=("$(command -v "python3.$minor")")
    done
fi
for candidate in "${candidates[@]}"; do
    [ -x "$candidate" ] || continue
    # "3.09", "3.13": sorted as text; nothing printed for an older or another Python
    version=$("$candidate" -c 'import sys
if sys.version_info >= (3, 9) and sys.implementation.name == "cpython": print("%d.%02d" % sys.version_info[:2])' 2>/dev/null) || continue
    [ -z "$version" ] || by_version[$version]="$candidate"
done
[ "${#by_version[@]}" -gt 0 ] || { echo "no CPython >= 3.9 found"; exit 1; }
versions=($(printf '%s\n' "${!by_version[@]}" | sort))
selected=("${versions[0]}")
[ "${#versions[@]}" -gt 1 ] && selected+=("${versions[-1]}")

numpy_tests=(test_api.py test_outputs.py test_hardening.py test_array_struct.py test_linear.py test_favor.py
             test_merge.py test_kv_starts.py test_enums.py test_output_cache.py)
if [ "$#" -eq 0 ]; then
    set -- "${numpy_tests[@]/#/$repo/bindings/python/tests/}"
fi
swift_dir=""
if command -v swift >/dev/null 2>&1; then swift_dir="$(dirname "$(readlink -f "$(command -v swift)")")"; fi
for version in "${selected[@]}"; do
    python="${by_version[$version]}"
    venv="$work/venv-$version"
    echo "== CPython ${version/.0/.} ($python): fresh venv, numpy and pytest from the index, the wheel with --no-index"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q numpy pytest
    "$venv/bin/python" -m pip install -q --no-index --no-deps "$wheel"
    clean=(env -i HOME="$work" PATH="$venv/bin:/usr/bin:/bin" PYTHONDONTWRITEBYTECODE=1)
    if [ -n "$swift_dir" ] && "${clean[@]}" sh -c 'command -v swift' >/dev/null; then
        echo "swift is still on the clean PATH"; exit 1
    fi
    (cd "$work" && "${clean[@]}" python -c "
import os, sys, performer
from performer import _performer
reader = _performer._array_reader()
expected = 'buffer' if sys.version_info >= (3, 11) else '__array_struct__'
print('installed', performer.__version__, 'at', os.path.dirname(performer.__file__), 'kernels',
      performer.kernel_isa(), 'arrays through', reader)
assert reader == expected, (reader, expected)
")
    (cd "$work" && "${clean[@]}" python -m pytest -q -p no:cacheprovider "$@")
done
echo "== the wheel ran on CPython ${selected[*]/.0/.}"
