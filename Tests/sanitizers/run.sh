#!/usr/bin/env bash
# The C ABI under the dynamic checkers (docs/RELIABILITY.md, "Probes"):
#   asan      the C ABI tests built with clang -fsanitize=address,undefined against the ASan
#             library (the fuzzer's, Tests/sanitizers/build.sh address)
#   tsan      the library built with --sanitize=thread: the C stress test (threads calling at
#             once, thread counts changing, decoders per thread, a projection redrawn), the
#             handle and idle-worker probes of test_hardening, and the Swift tests
#             SoftmaxConcurrencyTests and ThreadPoolTests
#   valgrind  memcheck on the AVX2 kernels (valgrind has no AVX-512) with the release library:
#             no invalid access, no use of uninitialized values, no definite leak; the thread
#             stress test and every hardening probe but the timing one
#   valgrind-full  the same plus test_abi, test_linear and test_favor (tens of minutes)
# Usage: Tests/sanitizers/run.sh [asan] [tsan] [valgrind | valgrind-full] (default: asan tsan valgrind). Prints each step's
# time; the last line is "N passed, M failed"; the exit status is nonzero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan tsan valgrind)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
run() {  # run NAME COMMAND...: passes when COMMAND exits 0
    local name=$1 start out rc
    shift
    start=$(date +%s)
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); echo "ok    $name ($(( $(date +%s) - start )) s)"
    else failed=$((failed + 1)); echo "FAIL  $name (exit $rc)"; printf '%s\n' "$out" | tail -60 | sed 's/^/      /'; fi
}
c_tests=(test_abi test_linear test_favor test_hardening test_stress_threads)
# The sanitized compiles of the C tests take seconds each on one core: they all start at once
# and each test runs when its compile is done, so the other core is not left idle.
# (`run` calls finish_compile in a subshell, which cannot wait for the script's jobs: it waits
# for the status file the job writes last.)
start_compile() {  # start_compile NAME COMMAND...: runs COMMAND in the background, output in $work/NAME.log
    local name=$1
    shift
    ( rc=0; "$@" > "$work/$name.log" 2>&1 || rc=$?; echo "$rc" > "$work/$name.rc.tmp"; mv "$work/$name.rc.tmp" "$work/$name.rc" ) &
}
finish_compile() {  # finish_compile NAME: waits for it; prints its output, returns its status
    while [ ! -f "$work/$1.rc" ]; do sleep 0.2; done
    cat "$work/$1.log"
    return "$(cat "$work/$1.rc")"
}

asan() {
    local lib
    lib=$(bash Tests/sanitizers/build.sh address) || { failed=$((failed + 1)); echo "FAIL  ASan build"; return; }
    for test in "${c_tests[@]}"; do
        start_compile "asan-$test" clang -std=c11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
            -fuse-ld=lld -I"$root/include" -I"$root/Tests/c" "$root/Tests/c/$test.c" "$lib" -Wl,-rpath,"$(dirname "$lib")" \
            -lpthread -lm -o "$work/asan-$test"
    done
    # Every compile finished before any test runs: test_hardening's idle_workers probe is a
    # timing ratio, which a compiler on the other core would disturb.
    for test in "${c_tests[@]}"; do
        run "ASan build of Tests/c/$test.c (waited for)" finish_compile "asan-$test"
    done
    for test in "${c_tests[@]}"; do
        # allocator_may_return_null: the probes ask for impossible sizes on purpose.
        run "ASan: $test (PERFORMER_NUM_THREADS=3)" env ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
            UBSAN_OPTIONS=halt_on_error=1 PERFORMER_NUM_THREADS=3 "$work/asan-$test"
    done
}

# The TSan build's test target holds these two classes only (Package.swift, PERFORMER_TSAN_TESTS):
# all their tests must run, none may be left out by a build that dropped a file.
swift_tsan_tests() {
    local expected out executed
    expected=$(cat Tests/PerformerCoreTests/SoftmaxConcurrencyTests.swift Tests/PerformerCoreTests/ThreadPoolTests.swift |
               grep -cE '^[[:space:]]*func test[A-Za-z0-9_]*\(')
    out=$(env PERFORMER_TSAN_TESTS=1 TSAN_OPTIONS="halt_on_error=1" swift test -c release --sanitize=thread \
          --scratch-path .build-tsan --skip-build -Xlinker --unresolved-symbols=ignore-all 2>&1) || { printf '%s\n' "$out"; return 1; }
    printf '%s\n' "$out"
    executed=$(printf '%s\n' "$out" | sed -nE 's/.*Executed ([0-9]+) tests?, with 0 failures.*/\1/p' | tail -1)
    [ "$executed" = "$expected" ] || { echo "executed ${executed:-no} tests, the two classes have $expected"; return 1; }
}

tsan() {
    local lib start dispatch
    lib=$(bash Tests/sanitizers/build.sh thread) || { failed=$((failed + 1)); echo "FAIL  TSan build"; return; }
    # The toolchain's TSan runtime intercepts libdispatch: link the toolchain's libdispatch.
    dispatch=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")/lib/swift/linux
    for test in test_stress_threads test_hardening; do  # compiled while the Swift tests run
        start_compile "tsan-$test" clang -std=c11 -O1 -g -fsanitize=thread -fuse-ld=lld -I"$root/include" \
            -I"$root/Tests/c" "$root/Tests/c/$test.c" "$lib" -Wl,-rpath,"$(dirname "$lib")" -L"$dispatch" \
            -Wl,-rpath,"$dispatch" -ldispatch -lBlocksRuntime -lpthread -lm -o "$work/tsan-$test"
    done
    run "TSan: swift test SoftmaxConcurrencyTests ThreadPoolTests (every test of both)" swift_tsan_tests
    for test in test_stress_threads test_hardening; do
        run "TSan build of Tests/c/$test.c (waited for)" finish_compile "tsan-$test"
    done
    export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
    run "TSan: test_stress_threads" "$work/tsan-test_stress_threads"
    run "TSan: test_stress_threads PERFORMER_SPIN_US=0" env PERFORMER_SPIN_US=0 "$work/tsan-test_stress_threads"
    # fork_child is left out: TSan does not support threads started after a multi-threaded fork.
    for probe in handles_threads idle_workers; do
        run "TSan: test_hardening $probe" "$work/tsan-test_hardening" "$probe"
    done
    unset TSAN_OPTIONS
}

valgrind_memcheck() {
    command -v valgrind >/dev/null || { failed=$((failed + 1)); echo "FAIL  valgrind not installed (Tests/install-deps.sh)"; return; }
    swift build -c release >/dev/null || { failed=$((failed + 1)); echo "FAIL  swift build -c release"; return; }
    # valgrind 3.19's DWARF reader gives up on this library's debug info (Swift's DWARF 4 beside
    # clang's DWARF 5 units: "Possibly corrupted debuginfo file ... I can't recover") and ends
    # the run. Memcheck needs only the symbols: it runs a copy without the debug sections
    # (reports keep function names, lose line numbers).
    local lib=$work/vg-lib/libperformer.so
    mkdir -p "$work/vg-lib"
    objcopy --strip-debug "$root/.build/release/libperformer.so" "$lib" || { failed=$((failed + 1)); echo "FAIL  objcopy --strip-debug"; return; }
    for test in "${c_tests[@]}"; do
        gcc -std=c11 -O1 -g -I"$root/include" -I"$root/Tests/c" "$root/Tests/c/$test.c" "$lib" \
            -Wl,-rpath,"$(dirname "$lib")" -lpthread -lm -o "$work/vg-$test" || { failed=$((failed + 1)); continue; }
    done
    local vg=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
              --show-leak-kinds=definite --track-origins=yes -q)
    # test_linear and test_favor take minutes each under memcheck (test_linear 374 s): only
    # "valgrind-full" runs them.
    local full=()
    [ "$1" = full ] && full=(test_abi test_linear test_favor)
    for test in "${full[@]}" test_stress_threads; do
        run "valgrind: $test (PERFORMER_ISA=avx2 PERFORMER_NUM_THREADS=3)" env PERFORMER_ISA=avx2 PERFORMER_NUM_THREADS=3 "${vg[@]}" "$work/vg-$test"
    done
    # The hardening probes but idle_workers (a timing ratio, meaningless at valgrind's speed).
    for probe in scratch_overflow favor_wild_state kv_lengths_batch empty_large_strides allocation_failures favor_in_place handles \
                 handles_threads executor_inline decoder_messages wrapping_views; do
        run "valgrind: test_hardening $probe" env PERFORMER_ISA=avx2 PERFORMER_NUM_THREADS=3 "${vg[@]}" "$work/vg-test_hardening" "$probe"
    done
    # fork_child with the leak check in the forked child too (valgrind follows fork): a child
    # once leaked the parent's worker records, 40 bytes per worker (docs/RELIABILITY.md, Findings).
    run "valgrind: test_hardening fork_child" env PERFORMER_ISA=avx2 PERFORMER_NUM_THREADS=3 \
        "${vg[@]}" "$work/vg-test_hardening" fork_child
}

for step in "${steps[@]}"; do
    start=$(date +%s)
    case $step in
    asan) asan ;;
    tsan) tsan ;;
    valgrind) valgrind_memcheck subset ;;
    valgrind-full) valgrind_memcheck full ;;
    *) echo "unknown step $step"; failed=$((failed + 1)) ;;
    esac
    echo "== $step: $(( $(date +%s) - start )) s"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
