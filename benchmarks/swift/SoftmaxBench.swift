// Softmax attention: ms, GFLOP/s and fraction of the micro-kernel peak over sequence lengths.
// FLOP convention: forward 4·N·L·D (two products; half of it when causal), backward 2.5× the
// forward (five products), so fwd+bwd = 3.5× forward.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

/// Softmax fwd, bwd (after a forward filled out and lse) and fwd+bwd at B = 1, H = `heads` query
/// heads on `keyHeads` key heads (default H: no GQA), D = M = `d`, float32.
struct SoftmaxRun {
    let forward: () throws -> Void
    let backward: () throws -> Void
    let both: () throws -> Void
    let release: () -> Void

    init(n: Int, heads: Int, keyHeads: Int? = nil, d: Int, causal: Bool) {
        let keyHeads = keyHeads ?? heads
        let shape = SIMD4(1, heads, n, d), keyShape = SIMD4(1, keyHeads, n, d), lseShape = SIMD4(1, heads, n, 1)
        let count = heads * n * d, keyCount = keyHeads * n * d
        let q = randomFloats(count, seed: 1), k = randomFloats(keyCount, seed: 2)
        let v = randomFloats(keyCount, seed: 3), dO = randomFloats(count, seed: 4)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let dq = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let dk = UnsafeMutablePointer<Float>.allocate(capacity: keyCount)
        let dv = UnsafeMutablePointer<Float>.allocate(capacity: keyCount)
        let lse = UnsafeMutablePointer<Float>.allocate(capacity: heads * n)
        let options = SoftmaxAttentionOptions(causal: causal)
        func strides(_ heads: Int) -> SIMD4<Int>? { benchStrides(heads: heads, n: n, columns: d) }  // BenchLayout.swift
        let qv = TensorView(base: UnsafePointer(q), shape: shape, strides: strides(heads))
        let kv = TensorView(base: UnsafePointer(k), shape: keyShape, strides: strides(keyHeads))
        let vv = TensorView(base: UnsafePointer(v), shape: keyShape, strides: strides(keyHeads))
        let outView = MutableTensorView(base: out, shape: shape, strides: strides(heads))
        let forward = { () throws in
            try SoftmaxAttention.forward(
                query: qv, key: kv, value: vv, output: outView,
                logSumExp: MutableTensorView(base: lse, shape: lseShape), options: options)
        }
        let backward = { () throws in
            try SoftmaxAttention.backward(
                query: qv, key: kv, value: vv, output: TensorView(base: UnsafePointer(out), shape: shape, strides: strides(heads)),
                logSumExp: TensorView(base: UnsafePointer(lse), shape: lseShape),
                outputGradient: TensorView(base: UnsafePointer(dO), shape: shape, strides: strides(heads)),
                queryGradient: MutableTensorView(base: dq, shape: shape, strides: strides(heads)),
                keyGradient: MutableTensorView(base: dk, shape: keyShape, strides: strides(keyHeads)),
                valueGradient: MutableTensorView(base: dv, shape: keyShape, strides: strides(keyHeads)), options: options)
        }
        self.forward = forward
        self.backward = backward
        both = { () throws in
            try forward()
            try backward()
        }
        release = { for p in [q, k, v, dO, out, dq, dk, dv, lse] { p.deallocate() } }
    }
}

func runSoftmaxBench(lengths: [Int], heads: Int, d: Int) throws {
    var peak = measurePeak().wall
    print("softmax attention. FLOP convention: fwd 4·N·L·D per head (half when causal), fwd+bwd 3.5× fwd")
    print("micro-kernel plain product peak: \(format1(peak)) GFLOP/s (wall clock, all threads)")
    print("%peak: median of (attention rate / peak rate measured right after it); cpu%: the same with rates per CPU-second")
    print("| N | causal | fwd ms | fwd GFLOP/s | fwd %peak | fwd cpu% | fwd+bwd ms | fwd+bwd GFLOP/s | fwd+bwd %peak | fwd+bwd cpu% |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in lengths {
        let runs = n >= 4096 ? 5 : 9
        for causal in [false, true] {
            let run = SoftmaxRun(n: n, heads: heads, d: d, causal: causal)
            defer { run.release() }
            let forwardFlops = 4.0 * Double(heads) * Double(n) * Double(n) * Double(d) * (causal ? 0.5 : 1)
            let bothFlops = 3.5 * forwardFlops
            let cells = try peakTableCells(runs: runs, forwardFlops: forwardFlops, bothFlops: bothFlops, forward: run.forward,
                                           both: run.both, milliseconds: format1, peak: &peak)
            print("| \(n) | \(causal) | \(cells) |")
        }
    }
    print("micro-kernel peak (best in-process measurement): \(format1(peak)) GFLOP/s")
}
