#!/usr/bin/env bash
# Every test of libperformer, on a fresh machine: installs what it needs, builds, then runs
# the Swift tests, the Swift API reference build (DocC, warnings are errors), a package that
# depends on this one by version (built in debug), the C/C++ tests (header, exported symbols,
# examples, loading without a Swift toolchain, bad input, threads), the C install (Tests/install/run.sh), the probes of
# issue 13 (ASan/UBSan, ThreadSanitizer, valgrind, 60 s of fuzzing), the Python tests
# (pip-installed package; PyTorch and transformers are installed into the test venv by
# bindings/python/tests/install-test-deps.sh, and PERFORMER_REQUIRE_TORCH=1 makes a missing
# torch a failure, not a skip) and the wheel installed where no Swift is (Tests/wheel/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies"
bash Tests/install-deps.sh

echo "== swift build -c release"
swift build -c release

# The tests import PerformerCore without @testable (what they reach is `package`), so
# swift test compiles with the flags of the release build above and reuses it: only the
# test targets are compiled here.
echo "== swift test"
swift test -c release --disable-testable-imports

echo "== Swift example (checks its own result)"
.build/release/SwiftExample

# Reuses the release build: symbol graph, a /// comment on every public symbol, docs/api/Swift.md
# current, DocC without a warning (about 20 s).
echo "== Swift API reference (DocC)"
bash docs/api/build-swift.sh --check

# By URL and version, the case SwiftPM guards against unsafe flags; debug, because the consumer
# builds the library again and a release build takes about 4 times as long
# (docs/INSTALL.md). The resolution, the flags check and the API are the same.
echo "== Swift consumer package (by version, debug)"
bash Tests/swift-consumer/run.sh --debug

echo "== C and C++ tests"
bash Tests/c/run.sh

echo "== C/C++ install: prefix, SONAME, version node, pkg-config and CMake consumers"
bash Tests/install/run.sh

# Issue 13's probes (docs/RELIABILITY.md): the C ABI under ASan/UBSan, ThreadSanitizer and
# valgrind, then the fuzzer for 60 s (Tests/fuzz/run.sh SECONDS runs it longer).
echo "== sanitizers and valgrind"
bash Tests/sanitizers/run.sh

echo "== fuzzing the C ABI (60 s)"
bash Tests/fuzz/run.sh 60

echo "== Python tests"
bash bindings/python/tests/run.sh

echo "== Python wheel: manylinux, installed in a fresh venv without Swift, the tests against it"
bash Tests/wheel/run.sh
