#!/usr/bin/env bash
# Installs what the tests need and a fresh machine may lack. Idempotent and quiet when
# everything is present.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
# The C install test (Tests/install/run.sh): a pkg-config and a CMake consumer, the SONAME stamp.
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v patchelf >/dev/null 2>&1 || need_apt+=(patchelf)
command -v strip >/dev/null 2>&1 || need_apt+=(binutils)
# The Swift consumer test clones the repository (Tests/swift-consumer/run.sh).
command -v git >/dev/null 2>&1 || need_apt+=(git)
# Tests/sanitizers/run.sh valgrind. The sanitizer and fuzzer builds use the Swift toolchain's
# own clang, ld.lld and compiler-rt (ASan, TSan, UBSan, libFuzzer); llvm-symbolizer (also the
# toolchain's) makes their reports readable.
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

python3 -c "import venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
}
