#!/usr/bin/env bash
# The Python wheel as a user without Swift gets it: bindings/python/build-wheel.sh builds and
# auditwheel-repairs it; then this checks the manylinux tag (file name and `auditwheel show`),
# that the bundled libperformer.so is stripped and needs no Swift library, installs the wheel
# into a fresh venv (no system site-packages) and runs the Python test suite against it in a
# clean environment whose PATH holds no Swift toolchain (`env -i`; the torch tests skip there).
# Arguments are passed to pytest. Exit status nonzero on any failure.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -f "$repo"/dist/libperformer-*.whl
wheel="$(bash "$repo/bindings/python/build-wheel.sh" | tail -n 1)"
name="${wheel##*/}"
echo "== wheel: $name ($(du -k "$wheel" | cut -f1) KiB)"
[[ "$name" =~ -manylinux_2_[0-9]+_x86_64(\.manylinux[a-z0-9_]+)*\.whl$ ]] || { echo "not tagged manylinux: $name"; exit 1; }
# auditwheel wraps its sentences: join the lines before matching.
"$repo/.build/wheel-venv/bin/auditwheel" show "$wheel" 2>/dev/null | tr -s ' \n' ' ' > "$work/show.txt"
grep -q 'is consistent with the following platform tag: "manylinux_2_[0-9]*_x86_64"' "$work/show.txt" || { cat "$work/show.txt"; exit 1; }

"$repo/.build/wheel-venv/bin/python" -m zipfile -e "$wheel" "$work/unpacked"
so="$work/unpacked/performer/libperformer.so"
[ -f "$so" ] || { echo "no performer/libperformer.so in the wheel"; exit 1; }
if readelf -S -W "$so" | grep -qE '\.symtab|\.debug_'; then echo "libperformer.so in the wheel is not stripped"; exit 1; fi
if readelf -d "$so" | grep NEEDED | grep -qi swift; then echo "libperformer.so in the wheel needs a Swift library"; exit 1; fi
echo "== bundled libperformer.so: $(du -k "$so" | cut -f1) KiB, stripped, no libswift"

# A fresh venv; numpy and pytest from the index (or pip's find-links), the wheel with --no-index.
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q numpy pytest
"$work/venv/bin/python" -m pip install -q --no-index --no-deps "$wheel"
swift_dir=""
if command -v swift >/dev/null 2>&1; then swift_dir="$(dirname "$(readlink -f "$(command -v swift)")")"; fi
clean=(env -i HOME="$work" PATH="$work/venv/bin:/usr/bin:/bin" PYTHONDONTWRITEBYTECODE=1)
if [ -n "$swift_dir" ] && "${clean[@]}" sh -c 'command -v swift' >/dev/null; then
    echo "swift is still on the clean PATH"; exit 1
fi
cd "$work"
"${clean[@]}" python -c "import performer, os; print('installed', performer.__version__, 'at', os.path.dirname(performer.__file__), 'kernels', performer.kernel_isa())"
"${clean[@]}" python -m pytest -q -p no:cacheprovider "$repo/bindings/python/tests" "$@"
