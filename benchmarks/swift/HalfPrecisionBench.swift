// Softmax attention on float16 / bfloat16 storage beside float32: what the convert-to-float32
// path (widen q, k, v, dout; float32 kernels; round out, dq, dk, dv) costs over float32.
// FLOP convention as SoftmaxBench: fwd 4·N·L·D per head, fwd+bwd 3.5× that; the ratio column
// is the half time over the float32 time of the same pass.
import PerformerCore

/// fwd and fwd+bwd closures over half tensors of one storage type, B = 1, H = `heads`, D = M = `d`.
private func halfRun<H: HalfPrecisionScalar>(_: H.Type, n: Int, heads: Int, d: Int, round: @escaping (Float) -> H)
    -> (forward: () throws -> Void, both: () throws -> Void, release: () -> Void) {
    let shape = SIMD4(1, heads, n, d), count = heads * n * d
    func halves(_ seed: UInt64) -> UnsafeMutablePointer<H> {
        let floats = randomFloats(count, seed: seed)
        defer { floats.deallocate() }
        let result = UnsafeMutablePointer<H>.allocate(capacity: count)
        for i in 0..<count { result[i] = round(floats[i]) }
        return result
    }
    let q = halves(1), k = halves(2), v = halves(3), dO = halves(4)
    let out = UnsafeMutablePointer<H>.allocate(capacity: count), dq = UnsafeMutablePointer<H>.allocate(capacity: count)
    let dk = UnsafeMutablePointer<H>.allocate(capacity: count), dv = UnsafeMutablePointer<H>.allocate(capacity: count)
    let lse = UnsafeMutablePointer<Float>.allocate(capacity: heads * n)
    let lseShape = SIMD4(1, heads, n, 1)
    let forward = { () throws in
        try SoftmaxAttention.forward(
            query: TensorView(base: UnsafePointer(q), shape: shape), key: TensorView(base: UnsafePointer(k), shape: shape),
            value: TensorView(base: UnsafePointer(v), shape: shape), output: MutableTensorView(base: out, shape: shape),
            logSumExp: MutableTensorView(base: lse, shape: lseShape))
    }
    let both = { () throws in
        try forward()
        try SoftmaxAttention.backward(
            query: TensorView(base: UnsafePointer(q), shape: shape), key: TensorView(base: UnsafePointer(k), shape: shape),
            value: TensorView(base: UnsafePointer(v), shape: shape), output: TensorView(base: UnsafePointer(out), shape: shape),
            logSumExp: TensorView(base: UnsafePointer(lse), shape: lseShape),
            outputGradient: TensorView(base: UnsafePointer(dO), shape: shape),
            queryGradient: MutableTensorView(base: dq, shape: shape), keyGradient: MutableTensorView(base: dk, shape: shape),
            valueGradient: MutableTensorView(base: dv, shape: shape))
    }
    let release = {
        for p in [q, k, v, dO, out, dq, dk, dv] { p.deallocate() }
        lse.deallocate()
    }
    return (forward, both, release)
}

func runHalfPrecisionBench(lengths: [Int], heads: Int, d: Int) throws {
    print("softmax attention, not causal, by storage dtype. FLOP convention: fwd 4·N·L·D per head, fwd+bwd 3.5× fwd")
    print("ratio: time over float32's (the conversion overhead of the convert-to-float32 path)")
    print("| N | dtype | fwd ms | fwd GFLOP/s | fwd ratio | fwd+bwd ms | fwd+bwd GFLOP/s | fwd+bwd ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for n in lengths {
        let runs = n >= 4096 ? 5 : 9
        let forwardFlops = 4.0 * Double(heads) * Double(n) * Double(n) * Double(d), bothFlops = 3.5 * forwardFlops
        let float32 = SoftmaxRun(n: n, heads: heads, d: d, causal: false)
        defer { float32.release() }
        let float16 = halfRun(Float16.self, n: n, heads: heads, d: d, round: { Float16($0) })
        defer { float16.release() }
        let bfloat16 = halfRun(BFloat16.self, n: n, heads: heads, d: d, round: { BFloat16($0) })
        defer { bfloat16.release() }
        let rows = try timeAgainstFirst(runs: runs, [("float32", float32.forward, float32.both),
                                                      ("float16", float16.forward, float16.both),
                                                      ("bfloat16", bfloat16.forward, bfloat16.both)])
        for row in rows {
            print("| \(n) | \(row.name) | \(format1(row.forward * 1e3)) | \(format1(forwardFlops / row.forward / 1e9)) | \(format2(row.forwardRatio)) | \(format1(row.both * 1e3)) | \(format1(bothFlops / row.both / 1e9)) | \(format2(row.bothRatio)) |")
        }
    }
}
