#!/usr/bin/env bash
# Builds libperformer.so with a sanitizer, in its own scratch directory, and prints the path of
# the library (and nothing else on stdout). Usage: Tests/sanitizers/build.sh address|thread.
#   address: .build-asan, ASan plus SanitizerCoverage (inline 8-bit counters, comparisons) on
#            every Swift module, so the fuzzer (Tests/fuzz/run.sh) is guided by the library's
#            own branches; the same library runs the C ABI tests under ASan.
#   thread:  .build-tsan, TSan, with the Swift tests that run.sh runs there.
# The library is linked with "-z undefs": a sanitized shared library takes the sanitizer's
# runtime from the executable that loads it (clang -fsanitize=... links it there), so the
# "-z defs" of Package.swift is overridden for these builds only.
set -euo pipefail
cd "$(dirname "$0")/../.."
kind=${1:?usage: build.sh address|thread}
start=$(date +%s)
case $kind in
address)
    scratch=.build-asan
    swift build -c release --sanitize=address --scratch-path "$scratch" --product performer \
        -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
        -Xlinker -z -Xlinker undefs >&2 ;;
thread)
    scratch=.build-tsan
    # The library and the Swift tests run.sh runs under TSan, one build: PERFORMER_TSAN_TESTS=1
    # makes Package.swift compile only those test classes and their support (run.sh sets it
    # too, so that swift test --skip-build sees the same package). The package's executables
    # are built as well (swift test's build): they link with gold, which knows
    # --unresolved-symbols=ignore-all, not -z undefs.
    PERFORMER_TSAN_TESTS=1 swift build -c release --sanitize=thread --scratch-path "$scratch" --build-tests \
        -Xlinker --unresolved-symbols=ignore-all >&2 ;;
*) echo "unknown sanitizer $kind" >&2; exit 2 ;;
esac
echo "== $kind build: $(( $(date +%s) - start )) s" >&2
echo "$PWD/$scratch/release/libperformer.so"
