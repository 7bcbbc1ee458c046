// The Hugging Face Llama benchmark's attention (issue 9): B = 1, H = 8 query heads on Hk = 2
// key heads (GQA), causal, float32, forward and backward timed apart, at D = 32 and at D = 64
// (so a change for D = 32 shows what it does to D = 64). One row per (N, D); ab.py compares two
// builds row by row. Times are process CPU seconds (a loaded host queues the wall clock; at 2
// threads this counts both threads, waiting included). FLOP convention: forward 4·N²/2·D·H, backward 2.5× that (five products).
import PerformerCore

func runGQABench(lengths: [Int], dims: [Int]) throws {
    let (heads, keyHeads) = (8, 2)
    print("softmax GQA \(heads) on \(keyHeads), causal, B=1. FLOP: fwd 4·N²/2·D·H, bwd 2.5× fwd; medians of CPU time")
    print("| N | D | fwd ms | fwd GFLOP/s | bwd ms | bwd GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for n in lengths {
        for d in dims {
            let queryShape = SIMD4(1, heads, n, d), keyShape = SIMD4(1, keyHeads, n, d)
            let queryCount = heads * n * d, keyCount = keyHeads * n * d
            let q = randomFloats(queryCount, seed: 1), dO = randomFloats(queryCount, seed: 4)
            let k = randomFloats(keyCount, seed: 2), v = randomFloats(keyCount, seed: 3)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: queryCount)
            let dq = UnsafeMutablePointer<Float>.allocate(capacity: queryCount)
            let dk = UnsafeMutablePointer<Float>.allocate(capacity: keyCount)
            let dv = UnsafeMutablePointer<Float>.allocate(capacity: keyCount)
            let lse = UnsafeMutablePointer<Float>.allocate(capacity: heads * n)
            defer { for p in [q, k, v, dO, out, dq, dk, dv, lse] { p.deallocate() } }
            let options = SoftmaxAttentionOptions(causal: true)
            let qv = TensorView(base: UnsafePointer(q), shape: queryShape)
            let kv = TensorView(base: UnsafePointer(k), shape: keyShape)
            let vv = TensorView(base: UnsafePointer(v), shape: keyShape)
            let lseShape = SIMD4(1, heads, n, 1)
            let forward = { () throws in
                try SoftmaxAttention.forward(
                    query: qv, key: kv, value: vv, output: MutableTensorView(base: out, shape: queryShape),
                    logSumExp: MutableTensorView(base: lse, shape: lseShape), options: options)
            }
            let backward = { () throws in
                try SoftmaxAttention.backward(
                    query: qv, key: kv, value: vv, output: TensorView(base: UnsafePointer(out), shape: queryShape),
                    logSumExp: TensorView(base: UnsafePointer(lse), shape: lseShape),
                    outputGradient: TensorView(base: UnsafePointer(dO), shape: queryShape),
                    queryGradient: MutableTensorView(base: dq, shape: queryShape),
                    keyGradient: MutableTensorView(base: dk, shape: keyShape),
                    valueGradient: MutableTensorView(base: dv, shape: keyShape), options: options)
            }
            let runs = n >= 2048 ? 7 : 15
            let forwardSeconds = try cpuTime(runs: runs, forward)
            let backwardSeconds = try cpuTime(runs: runs, backward)
            let flops = 2.0 * Double(heads) * Double(n) * Double(n) * Double(d)
            print("| \(n) | \(d) | \(format2(forwardSeconds * 1e3)) | \(format1(flops / forwardSeconds / 1e9)) "
                  + "| \(format2(backwardSeconds * 1e3)) | \(format1(2.5 * flops / backwardSeconds / 1e9)) |")
        }
    }
}

/// Median process CPU seconds of `runs` calls of `body` after one warm-up.
private func cpuTime(runs: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var samples: [Double] = []
    for _ in 0..<runs {
        let start = cpuNow()
        try body()
        samples.append(cpuNow() - start)
    }
    return median(samples)
}
