#!/usr/bin/env bash
# C and C++ tests of libperformer.so: the header compiles cleanly as C and C++, the exported
# symbols are exactly the header's functions with the header's signatures, the library needs no
# Swift toolchain, the examples build and check their own results, the ABI survives bad input
# (Tests/c/test_abi.c and, for linear attention and FAVOR+, Tests/c/test_linear.c and
# Tests/c/test_favor.c; the log-sum-exp merge in Tests/c/test_merge.c; the issue-13 probes in
# Tests/c/test_hardening.c; float16/bfloat16 in Tests/c/test_half.c and, for the decoders and the merge,
# Tests/c/test_half_decoders.c, under every kernel build),
# threads, and dlopen/dlclose/dlopen.
# Self-contained: builds the library if needed. The last line is "N passed, M failed";
# the exit status is nonzero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
if command -v swift >/dev/null 2>&1; then
    swift build -c release >/dev/null || { echo "swift build -c release failed"; echo "0 passed, 1 failed"; exit 1; }
fi
lib=$root/.build/release/libperformer.so
header=$root/include/performer.h
if [ ! -f "$lib" ]; then echo "no $lib"; echo "0 passed, 1 failed"; exit 1; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
report() {  # report NAME STATUS OUTPUT
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1)); echo "ok    $1"
    else
        failed=$((failed + 1)); echo "FAIL  $1"; printf '%s\n' "$3" | tail -40 | sed 's/^/      /'
    fi
}
step() {  # step NAME COMMAND...: one check, passes when COMMAND exits 0
    local name=$1 out rc
    shift
    out=$("$@" 2>&1); rc=$?
    report "$name" "$rc" "$out"
}
counted() {  # counted NAME COMMAND...: a test program that prints "N passed, M failed"; adds its counts
    local name=$1 out rc line p f
    shift
    out=$("$@" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    if [ -z "$line" ]; then report "$name (no summary line, exit $rc)" 1 "$out"; return; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed}
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    if [ "$rc" -eq 0 ] && [ "$f" -eq 0 ]; then echo "ok    $name ($p checks)"
    else echo "FAIL  $name ($line, exit $rc)"; printf '%s\n' "$out" | grep -v '^ok' | tail -40 | sed 's/^/      /'; fi
}

warn=(-Wall -Wextra -pedantic -Werror)
compilers_c=(gcc)
compilers_cxx=(g++)
command -v clang >/dev/null 2>&1 && compilers_c+=(clang)
command -v clang++ >/dev/null 2>&1 && compilers_cxx+=(clang++)

# ---- 1. The header compiles cleanly, twice included, as C99 and C++17.
cat > "$work/header.c" <<'SRC'
#include "performer.h"
#include "performer.h"
int main(void) {
    performer_softmax_options_t options;
    performer_linear_options_t linear_options;
    performer_linear_decoder_t decoder = 0;
    performer_feature_map map = PERFORMER_FEATURE_IDENTITY;
    performer_tensor_t t = {0, PERFORMER_FLOAT32, 0, {1, 1, 1, 1}, {1, 1, 1, 1}};
    performer_favor_options_t favor_options;
    performer_favor_projection_t projection = 0;
    performer_favor_decoder_t favor_decoder = 0;
    performer_favor_feature_kind kind = PERFORMER_FAVOR_RELU;
    performer_favor_projection_kind projection_kind = PERFORMER_PROJECTION_IID;
    performer_favor_norms norms = PERFORMER_NORMS_FIXED;
    (void)options; (void)linear_options; (void)decoder; (void)map; (void)t;
    (void)favor_options; (void)projection; (void)favor_decoder; (void)kind; (void)projection_kind; (void)norms;
    return PERFORMER_VERSION_NUMBER == 0 && PERFORMER_ABI_VERSION == 0;
}
SRC
cp "$work/header.c" "$work/header.cpp"
for cc in "${compilers_c[@]}"; do
    step "header compiles: $cc -std=c99 ${warn[*]}" "$cc" -std=c99 "${warn[@]}" -I"$root/include" -c "$work/header.c" -o "$work/header-$cc.o"
done
for cxx in "${compilers_cxx[@]}"; do
    step "header compiles: $cxx -std=c++17 ${warn[*]}" "$cxx" -std=c++17 "${warn[@]}" -I"$root/include" -c "$work/header.cpp" -o "$work/header-$cxx.o"
done

# ---- 2. Exported symbols = the functions the header declares.
header_functions() {  # function names declared in the header, after preprocessing (no comments)
    gcc -E -P -x c "$header" | grep -oE '\bperformer_[a-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' | sort -u
}
symbols_check() {
    header_functions > "$work/header.txt"
    [ -s "$work/header.txt" ] || { echo "no functions found in $header"; return 1; }
    # GLOBAL (or WEAK) defined entries of .dynsym, from readelf.
    readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && ($5 == "GLOBAL" || $5 == "WEAK") {print $8}' |
        sed 's/@.*//' | sort -u > "$work/global.txt"
    # Everything nm lists as defined in the dynamic table, whatever its binding.
    nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | sort -u > "$work/nm.txt"
    local ok=0
    if ! diff -u "$work/header.txt" "$work/global.txt"; then
        echo "GLOBAL dynamic symbols differ from the header's functions (- header, + library)"; ok=1
    fi
    if ! diff -u "$work/header.txt" "$work/nm.txt"; then
        echo "nm -D --defined-only lists more than the header's functions (- header, + library)"; ok=1
    fi
    readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && $5 == "GLOBAL" && $4 != "FUNC" {print "not a function:", $8; bad=1} END {exit bad}' || ok=1
    echo "$(wc -l < "$work/header.txt") functions in the header, $(wc -l < "$work/global.txt") exported"
    return $ok
}
step "exported symbols = header functions (readelf GLOBAL, nm -D --defined-only)" symbols_check

# ---- 3. The Swift @_cdecl signatures equal the header's prototypes: SwiftPM writes them to
# Performer-Swift.h (inside #if __OBJC__); compiling both declarations in one Objective-C
# translation unit turns any difference into "conflicting types".
signatures_check() {
    local generated=$root/.build/release/Performer.build/include/Performer-Swift.h
    [ -f "$generated" ] || { echo "missing $generated"; return 1; }
    command -v clang >/dev/null 2>&1 || { echo "clang (from the Swift toolchain) is needed"; return 1; }
    local n; n=$(grep -cE '^SWIFT_EXTERN .*performer_[a-z0-9_]+\(' "$generated")
    [ "$n" -eq "$(wc -l < "$work/header.txt")" ] || { echo "$n @_cdecl functions in $generated"; return 1; }
    mkdir -p "$work/objc/Foundation" "$work/sig"
    : > "$work/objc/Foundation/Foundation.h"  # the generated header includes it under __OBJC__; nothing is needed from it
    printf '#include "performer.h"\n#include "Performer-Swift.h"\n' > "$work/sig/signatures.m"
    clang -fsyntax-only -Werror -I"$root/include" -I"$work/objc" -I"$(dirname "$generated")" "$work/sig/signatures.m"
}
step "@_cdecl signatures match performer.h prototypes" signatures_check

# ---- 4. Dependencies: no libswift, only the C/C++ runtime (libpthread and libdl: where glibc
# < 2.34 keeps the old symbol versions Sources/CPerformerGlibcCompat binds), and no symbol
# version newer than glibc 2.31 / libstdc++ 3.4.28 (manylinux_2_31, docs/INSTALL.md).
deps_check() {
    ldd "$lib"
    if ldd "$lib" | grep -qi swift; then echo "depends on a Swift library"; return 1; fi
    local needed
    needed=$(readelf -d "$lib" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p' | grep -vE '^(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|ld-linux-x86-64|ld-linux-aarch64)\.so' || true)
    [ -z "$needed" ] || { echo "unexpected NEEDED: $needed"; return 1; }
    readelf -d "$lib" | grep -q 'NODELETE' || { echo "not linked with -z nodelete"; return 1; }
    if [ "$(uname -m)" = x86_64 ]; then
        local newer
        newer=$(objdump -T "$lib" | grep -E '\((GLIBC_2\.(3[2-9]|[4-9][0-9])|GLIBCXX_3\.4\.(29|[3-9][0-9]))\)' || true)
        [ -z "$newer" ] || { echo "symbols newer than glibc 2.31 / GLIBCXX_3.4.28:"; echo "$newer"; return 1; }
    fi
}
step "ldd: no libswift; NEEDED only libc/libm/libstdc++/libgcc_s/libpthread/libdl; NODELETE set; glibc <= 2.31" deps_check

# ---- 5. Examples build and check their own results.
step "build examples/c/softmax_dlopen.c (gcc -std=c99 ${warn[*]})" \
    gcc -std=c99 "${warn[@]}" -I"$root/include" "$root/examples/c/softmax_dlopen.c" -ldl -lm -o "$work/softmax_dlopen"
step "run softmax_dlopen" "$work/softmax_dlopen" "$lib"
step "build examples/cpp/softmax.cpp (g++ -std=c++17 ${warn[*]})" \
    g++ -std=c++17 "${warn[@]}" -I"$root/include" "$root/examples/cpp/softmax.cpp" -L"$(dirname "$lib")" -lperformer \
    -Wl,-rpath,"$(dirname "$lib")" -o "$work/softmax_cpp"
step "run softmax_cpp" "$work/softmax_cpp"

for example in linear_decode favor_attention; do
    step "build examples/c/$example.c (gcc -std=c99 ${warn[*]})" \
        gcc -std=c99 "${warn[@]}" -I"$root/include" "$root/examples/c/$example.c" -L"$(dirname "$lib")" -lperformer \
        -Wl,-rpath,"$(dirname "$lib")" -lm -o "$work/$example"
    step "run $example" "$work/$example"
done

# ---- 6. The ABI under attack, under each kernel build (portable: what a CPU without AVX runs).
# Each test includes Tests/c/test_support.h (its CHECK, tensors and error checks).
abi_tests=(test_abi test_linear test_favor test_hardening test_merge test_half test_half_decoders test_stress_threads)
run_abi() { LD_LIBRARY_PATH="$(dirname "$lib")" "$@"; }
# PERFORMER_ISA names a build the CPU cannot run → the library runs the fastest it can, which
# the default run already covers: only ISAs this CPU has are forced.
isas=(portable)
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && isas+=(avx2)
grep -qw avx512f /proc/cpuinfo && isas+=(avx512)
for test in "${abi_tests[@]}"; do
    step "build Tests/c/$test.c" gcc -std=c11 -O1 -g "${warn[@]}" -I"$root/include" -I"$root/Tests/c" \
        "$root/Tests/c/$test.c" -L"$(dirname "$lib")" -lperformer -lpthread -lm -o "$work/$test"
    counted "$test (default kernels)" run_abi "$work/$test"
    for isa in "${isas[@]}"; do
        counted "$test PERFORMER_ISA=$isa PERFORMER_NUM_THREADS=3" run_abi env PERFORMER_ISA=$isa PERFORMER_NUM_THREADS=3 "$work/$test"
    done
    # Workers that sleep at once instead of polling between calls (the pool's other wait path).
    counted "$test PERFORMER_SPIN_US=0 PERFORMER_NUM_THREADS=3" run_abi env PERFORMER_SPIN_US=0 PERFORMER_NUM_THREADS=3 "$work/$test"
done
portable_check() {
    local out; out=$(run_abi env PERFORMER_ISA=portable "$work/test_abi" 2>&1)
    printf '%s\n' "$out" | grep -qx 'kernel isa: portable, threads: [0-9]*' || { printf '%s\n' "$out" | head -5; return 1; }
}
step "PERFORMER_ISA=portable: performer_kernel_isa() reports portable" portable_check

# ---- 7. dlopen / dlclose / dlopen.
step "build Tests/c/test_dlopen_cycle.c" gcc -std=c99 "${warn[@]}" -I"$root/include" "$root/Tests/c/test_dlopen_cycle.c" \
    -ldl -o "$work/test_dlopen_cycle"
counted "dlopen/dlclose 1000 cycles (same results; RSS, fds, threads flat)" "$work/test_dlopen_cycle" "$lib" 1000

# ---- 8. Loads without a Swift toolchain: the .so and the tests alone in a directory, a
# clean environment, and then the toolchain prefix hidden under an empty tmpfs.
bare=$work/bare
mkdir -p "$bare"
cp "$lib" "$work/softmax_dlopen" "$bare/"
for test in "${abi_tests[@]}"; do
    cp "$work/$test" "$bare/"
    counted "env -i, only the .so on LD_LIBRARY_PATH: $test" env -i LD_LIBRARY_PATH="$bare" "$bare/$test"
done
step "env -i: softmax_dlopen" env -i "$bare/softmax_dlopen" "$bare/libperformer.so"
prefix=""
if command -v swift >/dev/null 2>&1; then prefix=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")"); fi
if [ -n "$prefix" ] && command -v unshare >/dev/null 2>&1; then
    cat > "$bare/hidden.sh" <<'SRC'
set -u
mount -t tmpfs none "$1" || exit 1
if [ -n "$(ls -A "$1")" ]; then echo "$1 is not empty"; exit 1; fi
if ldconfig -p | grep -q libswift; then echo "ldconfig still knows a libswift"; exit 1; fi
env -i LD_LIBRARY_PATH="$2" "$2/softmax_dlopen" "$2/libperformer.so" || exit 1
env -i LD_LIBRARY_PATH="$2" "$2/test_abi"
SRC
    counted "unshare -rm, empty tmpfs over $prefix: softmax_dlopen + test_abi" unshare -rm bash "$bare/hidden.sh" "$prefix" "$bare"
else
    report "unshare -rm with the toolchain ($prefix) hidden: needs swift and unshare" 1 "swift or unshare not found"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
