import PerformerKernelInterface

/// A validated linear-attention problem: sizes and options, derived once from the tensors of a
/// forward or backward call, plus the checks of the state arguments.
struct LinearProblem {
    var batch: Int, heads: Int, keyHeads: Int
    var shape: LinearHeadShape
    var options: LinearAttentionOptions

    /// Checks q (B×H×N×D), k (B×Hk×L×D), v (B×Hk×L×M) and the options.
    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>, options: LinearAttentionOptions)
        throws(PerformerError) {
        _ = try TensorLayout.elementCount(q.shape, name: "q")
        _ = try TensorLayout.elementCount(k.shape, name: "k")
        _ = try TensorLayout.elementCount(v.shape, name: "v")
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
        if options.causal {
            try Self.expect(n == l, "q.shape[2] = \(n) but k.shape[2] = \(l): causal linear attention needs as many queries as keys")
        }
        guard options.epsilon.isFinite, options.epsilon >= 0 else {
            throw PerformerError(.invalidArgument, "eps = \(options.epsilon) must be finite and >= 0")
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
        shape = LinearHeadShape(queryCount: n, keyCount: l, headDim: d, valueDim: m, featureDim: d)
        self.options = options
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

    var group: Int { heads / keyHeads }
    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    var stateShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureDim, shape.valueDim) }
    var normalizerShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureDim, 1) }
    var kernelFeatureMap: LinearFeatureKind { LinearFeatureKind(rawValue: options.featureMap.rawValue)! }

    /// Checks a state argument's two shapes (S: B×H×C×M, z: B×H×C×1) and that the call is causal.
    func checkState<T>(_ s: TensorView<T>, _ z: TensorView<T>, names: (String, String)) throws(PerformerError) {
        guard options.causal else {
            throw PerformerError(.invalidArgument, "\(names.0)/\(names.1) given but causal = false: only causal linear attention has a state")
        }
        try Self.expectShape(s, stateShape, name: names.0, meaning: "B×H×C×M")
        try Self.expectShape(z, normalizerShape, name: names.1, meaning: "B×H×C×1")
    }

    /// The kernel task of query head (b, h): its key head, its key limit, its matrices.
    func task<T>(b: Int, h: Int, query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
                 scratch: UnsafeMutableRawPointer) -> LinearAttentionTask {
        let hk = h / group
        return LinearAttentionTask(
            shape: shape, causal: options.causal, featureMap: kernelFeatureMap, epsilon: options.epsilon,
            keyLimit: options.keyLengths?[b] ?? shape.keyCount,
            query: query.matrix(b, h), key: key.matrix(b, hk), value: value.matrix(b, hk), scratch: scratch)
    }
}
