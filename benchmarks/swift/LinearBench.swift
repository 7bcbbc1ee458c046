// Linear attention ("Transformers are RNNs"): ms, GFLOP/s and fraction of the micro-kernel peak.
//
// FLOP convention (the RNN's own work, independent of the chunk size): per head and token the
// forward does two C × M products (S += φ(k)vᵀ, φ(q)ᵀS), 4·N·C·M in all, causal or not; the
// backward does four (∇φ(Q), G, ∇φ(K), ∇V) plus rebuilding S, counted as 8·N·C·M, so
// fwd+bwd = 3× the forward. The causal chunked form also computes the intra-chunk triangle
// (≈ N·T·(C + M) with chunk T); that work is not counted, so %peak understates the kernels'
// efficiency there. z / denominator terms (O(N·C)) are not counted either.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

struct LinearRun {
    let forward: () throws -> Void
    let both: () throws -> Void
    let release: () -> Void

    init(n: Int, heads: Int, d: Int, m: Int, causal: Bool, product: Bool = false) {
        let shape = SIMD4(1, heads, n, d), valueShape = SIMD4(1, heads, n, m)
        let q = randomFloats(heads * n * d, seed: 1), k = randomFloats(heads * n * d, seed: 2)
        let v = randomFloats(heads * n * m, seed: 3), dO = randomFloats(heads * n * m, seed: 4)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: heads * n * m)
        let dq = UnsafeMutablePointer<Float>.allocate(capacity: heads * n * d)
        let dk = UnsafeMutablePointer<Float>.allocate(capacity: heads * n * d)
        let dv = UnsafeMutablePointer<Float>.allocate(capacity: heads * n * m)
        let options = product
            ? LinearAttentionOptions(causal: causal, featureMap: .identity, normalize: false)
            : LinearAttentionOptions(causal: causal)
        // PERFORMER_BENCH_LAYOUT=bnhd: every tensor token-major, read and written through strides (BenchLayout.swift).
        let features = benchStrides(heads: heads, n: n, columns: d), values = benchStrides(heads: heads, n: n, columns: m)
        let qv = TensorView(base: UnsafePointer(q), shape: shape, strides: features)
        let kv = TensorView(base: UnsafePointer(k), shape: shape, strides: features)
        let vv = TensorView(base: UnsafePointer(v), shape: valueShape, strides: values)
        let forward = { () throws in
            try LinearAttention.forward(query: qv, key: kv, value: vv,
                                        output: MutableTensorView(base: out, shape: valueShape, strides: values),
                                        options: options)
        }
        self.forward = forward
        both = { () throws in
            try forward()
            try LinearAttention.backward(
                query: qv, key: kv, value: vv,
                outputGradient: TensorView(base: UnsafePointer(dO), shape: valueShape, strides: values),
                queryGradient: MutableTensorView(base: dq, shape: shape, strides: features),
                keyGradient: MutableTensorView(base: dk, shape: shape, strides: features),
                valueGradient: MutableTensorView(base: dv, shape: valueShape, strides: values), options: options)
        }
        release = { for p in [q, k, v, dO, out, dq, dk, dv] { p.deallocate() } }
    }
}

func runLinearBench(lengths: [Int], heads: Int, d: Int, m: Int) throws {
    var peak = measurePeak().wall
    // PERFORMER_BENCH_PRODUCT=1 times the un-normalized product (identity features, no denominator:
    // fast-transformers' causal_dot_product) instead of elu+1 attention.
    let product = getenv("PERFORMER_BENCH_PRODUCT").map { String(cString: $0) == "1" } ?? false
    print("linear attention, \(product ? "identity, normalize=false" : "elu+1")\(benchTokenMajor ? ", token-major B × N × H × X tensors" : ""). FLOP convention: fwd 4·N·C·M per head, fwd+bwd 3× fwd (intra-chunk triangle not counted)")
    print("micro-kernel plain product peak: \(format1(peak)) GFLOP/s (wall clock, all threads)")
    print("| N | causal | fwd ms | fwd GFLOP/s | fwd %peak | fwd cpu% | fwd+bwd ms | fwd+bwd GFLOP/s | fwd+bwd %peak | fwd+bwd cpu% |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    // PERFORMER_BENCH_CAUSAL=0 or 1 times one form only (for profiling).
    let only = getenv("PERFORMER_BENCH_CAUSAL").map { String(cString: $0) == "1" }
    for n in lengths {
        let runs = n >= 16384 ? 7 : 11
        for causal in [false, true] where only == nil || only == causal {
            let run = LinearRun(n: n, heads: heads, d: d, m: m, causal: causal, product: product)
            defer { run.release() }
            let forwardFlops = 4.0 * Double(heads) * Double(n) * Double(d) * Double(m)
            let bothFlops = 3 * forwardFlops
            let cells = try peakTableCells(runs: runs, forwardFlops: forwardFlops, bothFlops: bothFlops, forward: run.forward,
                                           both: run.both, milliseconds: format2, peak: &peak)
            print("| \(n) | \(causal) | \(cells) |")
        }
    }
    print("micro-kernel peak (best in-process measurement): \(format1(peak)) GFLOP/s")
}
