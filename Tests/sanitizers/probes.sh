#!/usr/bin/env bash
# Issue 13's probes that need the sanitized builds, in the order the test command runs them:
# the C ABI under ASan/UBSan and ThreadSanitizer (Tests/sanitizers/run.sh asan tsan, which
# builds both libraries first), then the fuzzer for 60 s (Tests/fuzz/run.sh; it reuses the ASan
# build). Tests/run-all.sh runs this in the background while its other steps run, and prints
# the output when they are done. Prints each part's time; the exit status is nonzero if any
# part failed (every part runs even so).
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
start=$(date +%s)
echo "== ASan/UBSan and ThreadSanitizer (started $(date -u +%H:%M:%S))"
bash Tests/sanitizers/run.sh asan tsan || status=1
echo "== ASan/UBSan and ThreadSanitizer: $(( $(date +%s) - start )) s"
start=$(date +%s)
echo "== fuzzing the C ABI, 60 s (started $(date -u +%H:%M:%S))"
bash Tests/fuzz/run.sh 60 || status=1
echo "== fuzzing the C ABI: $(( $(date +%s) - start )) s"
exit "$status"
