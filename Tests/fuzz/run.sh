#!/usr/bin/env bash
# Fuzzes the C ABI for SECONDS (default 60): Tests/fuzz/fuzz_abi.c built with
# clang -fsanitize=fuzzer,address,undefined against the ASan + coverage build of the library
# (Tests/sanitizers/build.sh address). Starts from the seed corpus Tests/fuzz/corpus plus what
# earlier runs found (.build-asan/fuzz-corpus); a failing input is written to
# .build-asan/fuzz-artifacts/ and the script exits nonzero. Replay one input:
#   .build-asan/fuzz_abi .build-asan/fuzz-artifacts/crash-...
# Usage: Tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
lib=$(bash Tests/sanitizers/build.sh address)
out=$PWD/.build-asan
clang -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fuse-ld=lld -Iinclude Tests/fuzz/fuzz_abi.c "$lib" -Wl,-rpath,"$(dirname "$lib")" -lm -o "$out/fuzz_abi"
mkdir -p "$out/fuzz-corpus" "$out/fuzz-artifacts"
echo "== fuzzing the C ABI for $seconds s"
# -malloc_limit_mb: the library asks malloc for impossible sizes on purpose (it must return
# PERFORMER_ERROR_OUT_OF_MEMORY); ASan returns NULL for them (allocator_may_return_null=1 in
# the target), and libFuzzer must not call them out of memory. Real memory stays bounded by
# -rss_limit_mb.
status=0
"$out/fuzz_abi" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -malloc_limit_mb=1000000000 \
    -max_len=512 -print_final_stats=1 -artifact_prefix="$out/fuzz-artifacts/" "$@" \
    "$out/fuzz-corpus" Tests/fuzz/corpus > "$out/fuzz.log" 2>&1 || status=$?
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added)|INITED|DONE|Done ' "$out/fuzz.log" || true
if [ "$status" -ne 0 ]; then
    grep -E -A30 'fuzz_abi:|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error' "$out/fuzz.log" | head -80
    echo "fuzzing failed (exit $status); log: $out/fuzz.log"
    exit 1
fi
echo "fuzzing: no failure in $seconds s"
