#!/usr/bin/env bash
# The C/C++ install (bindings/c/install.sh) as a user meets it: install into a temporary
# prefix, then check the files and symlinks, the SONAME (readelf -d), the version node of every
# exported symbol, that the exported symbols are still exactly the header's functions, and
# build and run examples from the prefix alone with pkg-config and with CMake find_package.
# Needs cmake, pkg-config and patchelf (Tests/install-deps.sh installs them). The last line is
# "N passed, M failed"; the exit status is nonzero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
header=$root/include/performer.h

passed=0
failed=0
step() {  # step NAME COMMAND...: one check, passes when COMMAND exits 0
    local name=$1 out rc
    shift
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); echo "ok    $name"
    else failed=$((failed + 1)); echo "FAIL  $name"; printf '%s\n' "$out" | tail -40 | sed 's/^/      /'; fi
}
macro() { sed -nE "s/^#define[[:space:]]+$1[[:space:]]+([0-9]+)[[:space:]]*$/\1/p" "$header"; }
version="$(macro PERFORMER_VERSION_MAJOR).$(macro PERFORMER_VERSION_MINOR).$(macro PERFORMER_VERSION_PATCH)"
abi=$(macro PERFORMER_ABI_VERSION)
lib=$prefix/lib

step "bash bindings/c/install.sh --prefix <tmp> (version $version, ABI $abi)" bash bindings/c/install.sh --prefix "$prefix"

layout_check() {
    [ -f "$prefix/include/performer.h" ] && cmp "$header" "$prefix/include/performer.h" || { echo "header"; return 1; }
    [ -f "$lib/libperformer.so.$version" ] && [ ! -L "$lib/libperformer.so.$version" ] || { echo "no real file libperformer.so.$version"; return 1; }
    [ "$(readlink "$lib/libperformer.so.$abi")" = "libperformer.so.$version" ] || { echo "libperformer.so.$abi does not link to libperformer.so.$version"; return 1; }
    [ "$(readlink "$lib/libperformer.so")" = "libperformer.so.$abi" ] || { echo "libperformer.so does not link to libperformer.so.$abi"; return 1; }
    for f in pkgconfig/performer.pc cmake/performer/performerConfig.cmake cmake/performer/performerConfigVersion.cmake; do
        [ -f "$lib/$f" ] || { echo "missing lib/$f"; return 1; }
    done
    ls -lR "$prefix"
}
step "layout: include/performer.h, lib/libperformer.so.$version <- .so.$abi <- .so, .pc, CMake config" layout_check

soname_check() {
    readelf -d "$lib/libperformer.so.$version" | grep -F "(SONAME)" | tee /dev/stderr |
        grep -qF "Library soname: [libperformer.so.$abi]"
}
step "readelf -d: SONAME libperformer.so.$abi" soname_check

stripped_check() {
    ls -l "$lib/libperformer.so.$version"
    ! readelf -S -W "$lib/libperformer.so.$version" | grep -qE '\.symtab|\.debug_'
}
step "installed library stripped (no .symtab, no .debug_*)" stripped_check

symbols_check() {
    gcc -E -P -x c "$header" | grep -oE '\bperformer_[a-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' | sort -u > "$work/header.txt"
    [ -s "$work/header.txt" ] || { echo "no functions found in $header"; return 1; }
    readelf --dyn-syms -W "$lib/libperformer.so.$version" | awk '$7 != "UND" && ($5 == "GLOBAL" || $5 == "WEAK") {print $8}' |
        sort -u > "$work/exported.txt"
    # Every exported name carries the default version PERFORMER_<ABI>, and nothing else is exported.
    if grep -v "@@PERFORMER_$abi\$" "$work/exported.txt"; then echo "^ exported outside the node PERFORMER_$abi"; return 1; fi
    sed 's/@.*//' "$work/exported.txt" | sort -u > "$work/names.txt"
    diff -u "$work/header.txt" "$work/names.txt" || { echo "exported symbols differ from the header's functions (- header, + library)"; return 1; }
    readelf -V -W "$lib/libperformer.so.$version" | grep -q "Name: PERFORMER_$abi" || { echo "no version definition PERFORMER_$abi"; return 1; }
    echo "$(wc -l < "$work/header.txt") functions, all @@PERFORMER_$abi"
}
step "exported symbols = header functions, each in version node PERFORMER_$abi" symbols_check

# ---- pkg-config: a C and a C++ example built with the flags the .pc file gives.
export PKG_CONFIG_PATH=$lib/pkgconfig
step "pkg-config --modversion performer = $version" test "$(pkg-config --modversion performer)" = "$version"
pc_build() {
    local flags; flags=$(pkg-config --cflags --libs performer) || return 1
    echo "pkg-config --cflags --libs performer: $flags"
    # shellcheck disable=SC2086
    gcc -std=c99 -Wall -Wextra -pedantic -Werror "$root/examples/c/favor_attention.c" $flags -lm -o "$work/pc_favor" &&
    g++ -std=c++17 -Wall -Wextra -pedantic -Werror "$root/examples/cpp/softmax.cpp" $flags -o "$work/pc_softmax"
}
step "build examples/c/favor_attention.c and examples/cpp/softmax.cpp with pkg-config" pc_build
needed_check() {  # the programs ask for the SONAME, not the unversioned development link
    readelf -d "$1" | grep -F "(NEEDED)" | grep -qF "[libperformer.so.$abi]"
}
step "pkg-config program NEEDED libperformer.so.$abi" needed_check "$work/pc_favor"
# A clean environment: the prefix's library only, no Swift toolchain on PATH.
step "run the pkg-config C example (env -i, LD_LIBRARY_PATH=<prefix>/lib)" env -i LD_LIBRARY_PATH="$lib" "$work/pc_favor"
step "run the pkg-config C++ example (env -i, LD_LIBRARY_PATH=<prefix>/lib)" env -i LD_LIBRARY_PATH="$lib" "$work/pc_softmax"

# ---- CMake: find_package(performer 0.2 REQUIRED CONFIG), target_link_libraries(performer::performer).
cmake_build() {
    cmake -S "$root/Tests/install/cmake-consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
        -DPERFORMER_EXAMPLES="$root/examples" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" &&
    cmake --build "$work/cmake-build"
}
step "CMake find_package(performer 0.2) + performer::performer: configure and build" cmake_build
# CMake puts the imported library's directory in the build RPATH: no LD_LIBRARY_PATH.
step "run the CMake C++ example (env -i)" env -i "$work/cmake-build/softmax_cpp"
step "run the CMake C example (env -i)" env -i "$work/cmake-build/favor_attention"
cmake_version_check() {  # a newer version than installed is refused
    mkdir -p "$work/cmake-too-new"
    printf 'cmake_minimum_required(VERSION 3.16)\nproject(p LANGUAGES C)\nfind_package(performer %s REQUIRED CONFIG)\n' \
        "$(( $(macro PERFORMER_VERSION_MAJOR) + 1 )).0" > "$work/cmake-too-new/CMakeLists.txt"
    ! cmake -S "$work/cmake-too-new" -B "$work/cmake-too-new/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1
}
step "CMake find_package(performer <next major>) is refused by performerConfigVersion.cmake" cmake_version_check
relocated_check() {  # the CMake package finds its prefix from its own location
    mv "$prefix" "$work/moved" &&
    cmake -S "$root/Tests/install/cmake-consumer" -B "$work/cmake-moved" -DCMAKE_PREFIX_PATH="$work/moved" \
        -DPERFORMER_EXAMPLES="$root/examples" >/dev/null && cmake --build "$work/cmake-moved" >/dev/null &&
    env -i "$work/cmake-moved/softmax_cpp"
}
step "CMake package still works after the prefix is moved" relocated_check

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
