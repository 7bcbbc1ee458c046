#!/usr/bin/env bash
# The demonstration: builds libperformer.so, then runs the same small attention problem from C
# (dlopen), C++ (linked), Swift and Python; each example checks its own result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tests/install-deps.sh

echo "== swift build -c release"
swift build -c release
lib="$PWD/.build/release/libperformer.so"
bin="$PWD/.build/demo"
mkdir -p "$bin"

echo; echo "== C (dlopen): examples/c/softmax_dlopen.c"
cc -std=c99 -O2 -Iinclude examples/c/softmax_dlopen.c -ldl -lm -o "$bin/softmax_dlopen"
"$bin/softmax_dlopen" "$lib"

echo; echo "== C++ (linked): examples/cpp/softmax.cpp"
c++ -std=c++17 -O2 -Iinclude examples/cpp/softmax.cpp -L"$(dirname "$lib")" -lperformer \
    -Wl,-rpath,"$(dirname "$lib")" -o "$bin/softmax_cpp"
"$bin/softmax_cpp"

echo; echo "== C (linked), linear attention as an RNN: examples/c/linear_decode.c"
cc -std=c99 -O2 -Iinclude examples/c/linear_decode.c -L"$(dirname "$lib")" -lperformer \
    -Wl,-rpath,"$(dirname "$lib")" -lm -o "$bin/linear_decode"
"$bin/linear_decode"

echo; echo "== C (linked), causal FAVOR+ in pieces with a carried state: examples/c/favor_attention.c"
cc -std=c99 -O2 -Iinclude examples/c/favor_attention.c -L"$(dirname "$lib")" -lperformer \
    -Wl,-rpath,"$(dirname "$lib")" -lm -o "$bin/favor_attention"
"$bin/favor_attention"

echo; echo "== Swift: examples/swift/main.swift"
.build/release/SwiftExample

echo; echo "== Python: examples/python"
py="$(bash bindings/python/install-venv.sh | tail -n 1)"
for example in examples/python/*.py; do
    echo "-- $example"
    "$py" "$example"
done
