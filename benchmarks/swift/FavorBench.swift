// FAVOR+ attention (m = 256 positive features, orthogonal projection): ms, GFLOP/s and fraction
// of the micro-kernel peak, bidirectional and causal, forward and forward + backward.
//
// FLOP convention (the products the algorithm needs, independent of chunking): per head and
// token the forward projects q and k (2 · 2·D·m) and does two C × M products (S += φ(k)vᵀ,
// φ(q)ᵀS): 4·N·(D·m + C·M) per head; fwd+bwd counted as 3× the forward, as for linear
// attention. The causal form's intra-chunk T × T products and the backward's recomputations
// are not counted, so %peak understates the kernels' own efficiency there.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

struct FavorRun {
    let forward: () throws -> Void
    let backward: () throws -> Void
    let release: () -> Void

    init(n: Int, heads: Int, d: Int, projection: FavorProjection, causal: Bool) {
        let shape = SIMD4(1, heads, n, d)
        let count = heads * n * d
        let q = randomFloats(count, seed: 11), k = randomFloats(count, seed: 12)
        let v = randomFloats(count, seed: 13), dO = randomFloats(count, seed: 14)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let dq = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let dk = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let dv = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let options = FavorAttentionOptions(causal: causal)
        let qv = TensorView(base: UnsafePointer(q), shape: shape), kv = TensorView(base: UnsafePointer(k), shape: shape)
        let vv = TensorView(base: UnsafePointer(v), shape: shape)
        forward = {
            try FavorAttention.forward(query: qv, key: kv, value: vv, projection: projection,
                                       output: MutableTensorView(base: out, shape: shape), options: options)
        }
        backward = {
            try FavorAttention.backward(
                query: qv, key: kv, value: vv, projection: projection,
                outputGradient: TensorView(base: UnsafePointer(dO), shape: shape),
                queryGradient: MutableTensorView(base: dq, shape: shape),
                keyGradient: MutableTensorView(base: dk, shape: shape),
                valueGradient: MutableTensorView(base: dv, shape: shape), options: options)
        }
        release = { for p in [q, k, v, dO, out, dq, dk, dv] { p.deallocate() } }
    }
}

func runFavorBench(lengths: [Int], heads: Int, d: Int) throws {
    let m = 256
    let projection = try FavorProjection(dim: d, numFeatures: m, seed: 1)
    var peak = measurePeak().wall
    print("FAVOR+ attention, m=\(m) positive. FLOP convention: fwd 4·N·(D·m + C·M) per head, fwd+bwd 3× fwd (chunk triangle and recomputation not counted)")
    print("micro-kernel plain product peak: \(format1(peak)) GFLOP/s (wall clock, all threads)")
    print("| N | causal | fwd ms | fwd GFLOP/s | fwd %peak | fwd+bwd ms | fwd+bwd GFLOP/s | fwd+bwd %peak | bwd ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    // PERFORMER_BENCH_CAUSAL=0 or 1 times one form only (for profiling).
    let only = getenv("PERFORMER_BENCH_CAUSAL").map { String(cString: $0) == "1" }
    for n in lengths {
        let runs = n >= 65536 ? 3 : n >= 16384 ? 5 : 9
        for causal in [false, true] where only == nil || only == causal {
            let run = FavorRun(n: n, heads: heads, d: d, projection: projection, causal: causal)
            defer { run.release() }
            let forwardFlops = 4.0 * Double(heads * n) * Double(d * m + m * d)
            let bothFlops = 3 * forwardFlops
            let (forwardSeconds, forwardFraction, _) = try timeAgainstPeak(runs: runs, flops: forwardFlops, run.forward)
            let (bothSeconds, bothFraction, _) = try timeAgainstPeak(runs: runs, flops: bothFlops) {
                try run.forward()
                try run.backward()
            }
            let backwardSeconds = try time(runs: runs, run.backward)
            peak = max(peak, measurePeak().wall)
            let fg = forwardFlops / forwardSeconds / 1e9, bg = bothFlops / bothSeconds / 1e9
            print("| \(n) | \(causal) | \(format2(forwardSeconds * 1e3)) | \(format1(fg)) | \(format1(100 * forwardFraction))% | \(format2(bothSeconds * 1e3)) | \(format1(bg)) | \(format1(100 * bothFraction))% | \(format2(backwardSeconds * 1e3)) |")
        }
    }
    print("")
    print("feature map alone (favor_features of B=1 × H × N rows, m=\(m) positive); FLOPs: the product 2·N·D·m per head (fwd), two products (bwd)")
    print("| N | features | fwd ms | fwd GFLOP/s | fwd %peak | bwd ms | bwd GFLOP/s | bwd %peak |")
    print("|---|---|---|---|---|---|---|---|")
    for n in lengths where only == nil {
        let shape = SIMD4(1, heads, n, d), featureShape = SIMD4(1, heads, n, m)
        let x = randomFloats(heads * n * d, seed: 15), g = randomFloats(heads * n * m, seed: 16)
        let phi = UnsafeMutablePointer<Float>.allocate(capacity: heads * n * m)
        let dx = UnsafeMutablePointer<Float>.allocate(capacity: heads * n * d)
        defer { for p in [x, g, phi, dx] { p.deallocate() } }
        let xv = TensorView(base: UnsafePointer(x), shape: shape)
        let flops = 2.0 * Double(heads * n * d * m)
        let (forwardSeconds, forwardFraction, _) = try timeAgainstPeak(runs: 9, flops: flops) {
            try FavorFeatures.forward(input: xv, projection: projection, output: MutableTensorView(base: phi, shape: featureShape))
        }
        let (backwardSeconds, backwardFraction, _) = try timeAgainstPeak(runs: 9, flops: 2 * flops) {
            try FavorFeatures.backward(input: xv, featureGradient: TensorView(base: UnsafePointer(g), shape: featureShape),
                                       projection: projection, inputGradient: MutableTensorView(base: dx, shape: shape))
        }
        print("| \(n) | positive | \(format2(forwardSeconds * 1e3)) | \(format1(flops / forwardSeconds / 1e9)) | \(format1(100 * forwardFraction))% | \(format2(backwardSeconds * 1e3)) | \(format1(2 * flops / backwardSeconds / 1e9)) | \(format1(100 * backwardFraction))% |")
    }
    print("micro-kernel peak (best in-process measurement): \(format1(peak)) GFLOP/s")
}
