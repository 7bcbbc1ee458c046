import PerformerKernelInterface

/// A validated softmax-attention problem: sizes, masking inputs and the scale, derived once
/// from the tensors and options of a forward or backward call.
struct SoftmaxProblem {
    var batch: Int, heads: Int, keyHeads: Int
    var shape: SoftmaxHeadShape
    var scale: Double
    var causal: Bool
    var keyLengths: [Int]?

    /// Checks q (B×H×N×D), k (B×Hk×L×D), v (B×Hk×L×M) and the options.
    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>, options: SoftmaxAttentionOptions)
        throws(PerformerError) {
        for (name, view) in [("q", q), ("k", k), ("v", v)] {
            _ = try TensorLayout.elementCount(view.shape, name: name)
        }
        let (b, h, n, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (hk, l, m) = (k.shape[1], k.shape[2], v.shape[3])
        try Self.expect(k.shape[0] == b, "k.shape[0] = \(k.shape[0]) but q.shape[0] = \(b) (batch)")
        try Self.expect(k.shape[3] == d, "k.shape[3] = \(k.shape[3]) but q.shape[3] = \(d) (head dim)")
        try Self.expect(v.shape[0] == b, "v.shape[0] = \(v.shape[0]) but q.shape[0] = \(b) (batch)")
        try Self.expect(v.shape[1] == hk, "v.shape[1] = \(v.shape[1]) but k.shape[1] = \(hk) (key heads)")
        try Self.expect(v.shape[2] == l, "v.shape[2] = \(v.shape[2]) but k.shape[2] = \(l) (keys)")
        try Self.expect(hk >= 1, "k.shape[1] = \(hk): need at least one key head")
        try Self.expect(h % hk == 0, "q.shape[1] = \(h) heads is not a multiple of k.shape[1] = \(hk) key heads")
        try Self.expect(d >= 1, "q.shape[3] = \(d): head dim must be at least 1")
        if let scale = options.scale, !scale.isFinite {
            throw PerformerError(.invalidArgument, "scale = \(scale) is not finite")
        }
        if let lengths = options.keyLengths {
            try Self.expect(lengths.count == b, "kv_lengths has \(lengths.count) entries but batch = \(b)")
            for (index, length) in lengths.enumerated() where !(0...l).contains(length) {
                throw PerformerError(.invalidArgument, "kv_lengths[\(index)] = \(length) is not in 0...\(l)")
            }
        }
        batch = b
        heads = h
        keyHeads = hk
        shape = SoftmaxHeadShape(queryCount: n, keyCount: l, headDim: d, valueDim: m)
        scale = options.scale ?? 1 / Double(d).squareRoot()
        causal = options.causal
        keyLengths = options.keyLengths
    }

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws(PerformerError) {
        if !condition { throw PerformerError(.shapeMismatch, message()) }
    }

    /// Throws unless `view` has exactly `expected` shape.
    static func expectShape<T>(_ view: TensorView<T>, _ expected: SIMD4<Int>, name: String, meaning: String)
        throws(PerformerError) {
        for axis in 0..<4 where view.shape[axis] != expected[axis] {
            throw PerformerError(.shapeMismatch, "\(name).shape[\(axis)] = \(view.shape[axis]) but expected \(expected[axis]) (\(name) is \(meaning) = \(TensorLayout.describe(expected)))")
        }
    }

    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    var logSumExpShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, 1) }

    func masking(batch b: Int) -> SoftmaxMasking {
        SoftmaxMasking(causal: causal, causalOffset: shape.keyCount - shape.queryCount,
                       keyLimit: keyLengths?[b] ?? shape.keyCount)
    }
}

extension TensorView {
    /// Head (b, h) as a matrix over the last two axes.
    func matrix(_ b: Int, _ h: Int) -> StridedMatrix {
        StridedMatrix(base: UnsafeMutableRawPointer(mutating: base + b * strides[0] + h * strides[1]),
                      rowStride: strides[2], columnStride: strides[3])
    }
}

extension MutableTensorView {
    func matrix(_ b: Int, _ h: Int) -> StridedMatrix { readOnly.matrix(b, h) }
}
