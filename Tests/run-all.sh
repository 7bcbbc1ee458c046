#!/usr/bin/env bash
# Every test of libperformer, on a fresh machine: installs what it needs, builds, then runs
# the Swift tests, the C/C++ tests (header, exported symbols, examples, loading without a
# Swift toolchain, bad input, threads), the C install (Tests/install/run.sh), the Python
# tests (pip-installed package; PyTorch and transformers are installed into the test venv by
# bindings/python/tests/install-test-deps.sh, and PERFORMER_REQUIRE_TORCH=1 makes a missing
# torch a failure, not a skip) and the wheel installed where no Swift is (Tests/wheel/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies"
bash Tests/install-deps.sh

echo "== swift build -c release"
swift build -c release

echo "== swift test"
swift test -c release

echo "== Swift example (checks its own result)"
.build/release/SwiftExample

echo "== C and C++ tests"
bash Tests/c/run.sh

echo "== C/C++ install: prefix, SONAME, version node, pkg-config and CMake consumers"
bash Tests/install/run.sh

echo "== Python tests"
bash bindings/python/tests/run.sh

echo "== Python wheel: manylinux, installed in a fresh venv without Swift, the tests against it"
bash Tests/wheel/run.sh
