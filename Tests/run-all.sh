#!/usr/bin/env bash
# Every test of libperformer, on a fresh machine: installs what it needs, builds, then runs
# the Swift tests, the Swift API reference build (DocC, warnings are errors), a package that
# depends on this one by version (built in debug), the C/C++ tests (header, exported symbols,
# examples, loading without a Swift toolchain, bad input, threads), the C install (Tests/install/run.sh),
# valgrind (issue 13), the Python tests (pip-installed package; PyTorch and transformers are
# installed into the test venv by bindings/python/tests/install-test-deps.sh, and
# PERFORMER_REQUIRE_TORCH=1 makes a missing torch a failure, not a skip), the wheel installed
# where no Swift is (Tests/wheel/run.sh), the rest of issue 13's probes (ASan/UBSan and
# ThreadSanitizer) and last 60 s of fuzzing.
# Every step prints its start and its seconds, and the end of the log a table of them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints its start and its seconds; the table of all of them is printed at the end,
# also when a step fails (the failing step is the last row).
timings=()
run_start=$(date +%s)
step() {  # step TITLE COMMAND...
    local title=$1 start
    shift
    start=$(date +%s)
    echo "== $title (started $(date -u +%H:%M:%S))"
    timings+=("$title|running")
    "$@"
    timings[-1]="$title|$(( $(date +%s) - start ))"
    echo "== $title: $(( $(date +%s) - start )) s"
}
summary() {
    local row
    echo "== step times (s)"
    for row in "${timings[@]}"; do printf '%8s  %s\n' "${row##*|}" "${row%|*}"; done
    printf '%8s  total\n' "$(( $(date +%s) - run_start ))"
}
trap summary EXIT

step "installing test dependencies" bash Tests/install-deps.sh

step "swift build -c release" swift build -c release

# The tests import PerformerCore without @testable (what they reach is `package`), so
# swift test compiles with the flags of the release build above and reuses it: only the
# test targets are compiled here.
step "swift test" swift test -c release --disable-testable-imports

step "Swift example (checks its own result)" .build/release/SwiftExample

# Reuses the release build: symbol graph, a /// comment on every public symbol, docs/api/Swift.md
# current, DocC without a warning (about 20 s).
step "Swift API reference (DocC)" bash docs/api/build-swift.sh --check

# By URL and version, the case SwiftPM guards against unsafe flags; debug, because the consumer
# builds the library again and a release build takes about 4 times as long
# (docs/INSTALL.md). The resolution, the flags check and the API are the same.
step "Swift consumer package (by version, debug)" bash Tests/swift-consumer/run.sh --debug

step "C and C++ tests" bash Tests/c/run.sh

step "C/C++ install: prefix, SONAME, version node, pkg-config and CMake consumers" bash Tests/install/run.sh

# Issue 13's valgrind probe runs on the release library (docs/RELIABILITY.md).
step "valgrind memcheck (C tests)" bash Tests/sanitizers/run.sh valgrind

step "Python tests" bash bindings/python/tests/run.sh

step "Python wheel: manylinux, installed in a fresh venv without Swift, the tests against it" bash Tests/wheel/run.sh

# Issue 13's sanitizer probes: the ASan + coverage and TSan builds of the library, the C ABI
# tests under ASan/UBSan and TSan, the Swift concurrency tests under TSan. They run in the
# foreground, after the others: beside them, the timing-sensitive tests (idle workers, the GIL
# release, the distributed time bounds) would share the two cores with two compilers.
step "sanitizer probes: ASan/UBSan and ThreadSanitizer" bash Tests/sanitizers/run.sh asan tsan

# The fuzzer for 60 s against the ASan build (Tests/fuzz/run.sh SECONDS runs it longer).
step "fuzzing the C ABI (60 s)" bash Tests/fuzz/run.sh 60
