import PerformerCore
import XCTest

/// kv_starts (left padding) for exact softmax attention: keys j < kv_starts[b] or j ≥
/// kv_lengths[b] are masked, the causal mask stays in the original key indices. Checked against
/// the float64 reference, against the same computation on each batch row's unpadded keys, for
/// padding that changes nothing and gets zero gradients, and for bad starts.
final class SoftmaxKeyStartsTests: XCTestCase {
    /// Tiled forward and every backward layout (GQA), the few-query row path with key chunks,
    /// left, right and both-side padding, an empty range in the middle and at the end.
    static let cases: [SoftmaxCase] = [
        SoftmaxCase(batch: 4, heads: 4, keyHeads: 2, queries: 150, keys: 150, headDim: 16, valueDim: 8,
                    keyLengths: [150, 120, 150, 60], keyStarts: [37, 0, 150, 60]),
        SoftmaxCase(batch: 4, heads: 4, keyHeads: 2, queries: 150, keys: 150, headDim: 16, valueDim: 8, causal: true,
                    keyLengths: [150, 120, 150, 60], keyStarts: [37, 0, 150, 60]),
        SoftmaxCase(batch: 3, heads: 2, keyHeads: 1, queries: 5, keys: 700, headDim: 8, valueDim: 12, causal: true,
                    keyLengths: [700, 650, 600], keyStarts: [0, 300, 520]),
        SoftmaxCase(batch: 2, heads: 3, keyHeads: 3, queries: 70, keys: 333, headDim: 24, valueDim: 5, causal: true,
                    keyStarts: [100, 332]),
        SoftmaxCase(batch: 2, heads: 1, keyHeads: 1, queries: 200, keys: 90, headDim: 8, valueDim: 8, causal: true,
                    keyLengths: [80, 90], keyStarts: [10, 45]),
    ]

    func testMatchesFloat64ReferenceOnEveryISAAndThreadCount() throws {
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        try forEachSupportedISA { isa in
            for threads in [1, 3] {
                try Runtime.setNumThreads(threads)
                for (index, spec) in Self.cases.enumerated() {
                    SoftmaxHarness.check(spec, as: Float.self, seed: 900 + UInt64(index), tolerance: 1e-5,
                                         context: "threads=\(threads)")
                    SoftmaxHarness.check(spec, as: Double.self, seed: 900 + UInt64(index), tolerance: 1e-11,
                                         context: "threads=\(threads)")
                }
            }
        }
    }

    /// Batch row b, heads all, rows `rows` of axis 2.
    private func slice(_ t: DenseTensor, batch b: Int, rows: Range<Int>) -> DenseTensor {
        var result = DenseTensor(shape: SIMD4(1, t.shape[1], rows.count, t.shape[3]))
        for h in 0..<t.shape[1] { for (r, row) in rows.enumerated() { for c in 0..<t.shape[3] {
            result[0, h, r, c] = t[b, h, row, c]
        } } }
        return result
    }

    /// Each batch row equals a call on its unpadded keys alone: every key range without a causal
    /// mask; with one (N = L), left padding, where query i ≥ start sees keys start ... i of
    /// the row, as the sliced call's query i − start does.
    func testEachBatchRowEqualsTheCallOnItsUnpaddedKeys() throws {
        let plain = SoftmaxCase(batch: 3, heads: 4, keyHeads: 2, queries: 90, keys: 130, headDim: 16, valueDim: 8,
                                keyLengths: [130, 100, 77], keyStarts: [40, 0, 20])
        let causal = SoftmaxCase(batch: 3, heads: 2, keyHeads: 1, queries: 130, keys: 130, headDim: 16, valueDim: 8,
                                 causal: true, keyStarts: [40, 0, 129])
        for spec in [plain, causal] {
            let inputs = SoftmaxInputs.random(spec, seed: 31)
            let (_, padded) = try SoftmaxHarness.run(spec, inputs, as: Double.self)
            for b in 0..<spec.batch {
                let (start, end) = (spec.keyStarts![b], spec.keyLengths?[b] ?? spec.keys)
                let queries = spec.causal ? start..<spec.queries : 0..<spec.queries
                var one = spec
                (one.batch, one.keys, one.queries, one.keyLengths, one.keyStarts) = (1, end - start, queries.count, nil, nil)
                let sliced = SoftmaxInputs(q: slice(inputs.q, batch: b, rows: queries), k: slice(inputs.k, batch: b, rows: start..<end),
                                           v: slice(inputs.v, batch: b, rows: start..<end),
                                           dout: slice(inputs.dout, batch: b, rows: queries))
                let (_, alone) = try SoftmaxHarness.run(one, sliced, as: Double.self)
                let label = "\(spec) b=\(b)"
                for (name, got, want) in [("out", slice(padded.out, batch: b, rows: queries), alone.out),
                                          ("lse", slice(padded.lse, batch: b, rows: queries), alone.lse),
                                          ("dq", slice(padded.dq!, batch: b, rows: queries), alone.dq!),
                                          ("dk", slice(padded.dk!, batch: b, rows: start..<end), alone.dk!),
                                          ("dv", slice(padded.dv!, batch: b, rows: start..<end), alone.dv!)] {
                    XCTAssertLessThanOrEqual(relativeError(got, want), 1e-12, "\(name) \(label)")
                }
                // Causal queries before the start see no key.
                for h in 0..<spec.heads { for i in 0..<queries.lowerBound {
                    XCTAssertEqual(padded.lse[b, h, i, 0], -.infinity, "lse row \(i) \(label)")
                    for c in 0..<spec.valueDim { XCTAssertEqual(padded.out[b, h, i, c], 0) }
                    for c in 0..<spec.headDim { XCTAssertEqual(padded.dq![b, h, i, c], 0) }
                } }
            }
        }
    }

    /// Padded keys: other k, v values give the same bits everywhere, and their dk, dv are 0.
    func testPaddedKeysHaveNoEffectAndZeroGradients() throws {
        for spec in Self.cases {
            let inputs = SoftmaxInputs.random(spec, seed: 77)
            var changed = inputs
            var rng = SplitMix64(seed: 5)
            for b in 0..<spec.batch {
                let window = spec.keyStarts![b]..<(spec.keyLengths?[b] ?? spec.keys)
                for hk in 0..<spec.keyHeads { for j in 0..<spec.keys where !window.contains(j) {
                    for c in 0..<spec.headDim { changed.k[b, hk, j, c] = 100 * rng.nextNormal() }
                    for c in 0..<spec.valueDim { changed.v[b, hk, j, c] = 100 * rng.nextNormal() }
                } }
            }
            try checkPaddingHasNoEffect(spec, inputs, changed, as: Float.self)
            try checkPaddingHasNoEffect(spec, inputs, changed, as: Double.self)
        }
    }

    private func checkPaddingHasNoEffect<T: AttentionScalar>(_ spec: SoftmaxCase, _ inputs: SoftmaxInputs,
                                                             _ changed: SoftmaxInputs, as _: T.Type) throws {
        let a = try SoftmaxHarness.run(spec, inputs, as: T.self).outputs
        let b = try SoftmaxHarness.run(spec, changed, as: T.self).outputs
        for ((name, x), (_, y)) in zip(a.all, b.all) {
            XCTAssertEqual(x.values.map(\.bitPattern), y.values.map(\.bitPattern), "\(name) \(T.self) \(spec)")
        }
        for batch in 0..<spec.batch {
            let window = spec.keyStarts![batch]..<(spec.keyLengths?[batch] ?? spec.keys)
            for hk in 0..<spec.keyHeads { for j in 0..<spec.keys where !window.contains(j) {
                for c in 0..<spec.headDim { XCTAssertEqual(a.dk![batch, hk, j, c], 0, "dk[\(batch),\(hk),\(j)] \(spec)") }
                for c in 0..<spec.valueDim { XCTAssertEqual(a.dv![batch, hk, j, c], 0, "dv[\(batch),\(hk),\(j)] \(spec)") }
            } }
        }
    }

    func testBadStartsAreRejectedAndNothingIsWritten() {
        let base = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 6, keys: 9, headDim: 4, valueDim: 3)
        let bad: [([Int]?, [Int], String)] = [
            (nil, [0, -1], "kv_starts[1] = -1 is not in 0...9"),
            (nil, [10, 0], "kv_starts[0] = 10 is not in 0...9"),
            ([9, 4], [0, 5], "kv_starts[1] = 5 is past kv_lengths[1] = 4"),
            (nil, [0], "kv_starts has 1 entries but batch = 2"),
            (nil, [0, 1, 2], "kv_starts has 3 entries but batch = 2"),
        ]
        let inputs = SoftmaxInputs.random(base, seed: 3)
        for (lengths, starts, message) in bad {
            var spec = base
            (spec.keyLengths, spec.keyStarts) = (lengths, starts)
            let status: PerformerStatus = starts.count == base.batch ? .invalidArgument : .shapeMismatch
            let q = StridedBuffer<Float>.holding(inputs.q), k = StridedBuffer<Float>.holding(inputs.k)
            let v = StridedBuffer<Float>.holding(inputs.v), dout = StridedBuffer<Float>.holding(inputs.dout)
            var out = StridedBuffer<Float>(shape: spec.outputShape), lse = StridedBuffer<Float>(shape: spec.logSumExpShape)
            var dq = StridedBuffer<Float>(shape: spec.queryShape), dk = StridedBuffer<Float>(shape: spec.keyShape)
            var dv = StridedBuffer<Float>(shape: spec.valueShape)
            let lseIn = StridedBuffer<Float>.holding(DenseTensor(shape: spec.logSumExpShape))
            assertThrowsPerformerError(status, containing: message, "forward \(spec)") {
                try q.withView { q in try k.withView { k in try v.withView { v in
                    try out.withMutableView { out in try lse.withMutableView { lse in
                        try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, logSumExp: lse, options: spec.options)
                    } }
                } } }
            }
            assertThrowsPerformerError(status, containing: message, "backward \(spec)") {
                try q.withView { q in try k.withView { k in try v.withView { v in try dout.withView { dout in
                  try lseIn.withView { lseIn in
                    try dq.withMutableView { dq in try dk.withMutableView { dk in try dv.withMutableView { dv in
                        try SoftmaxAttention.backward(query: q, key: k, value: v, output: dout, logSumExp: lseIn, outputGradient: dout,
                                                      queryGradient: dq, keyGradient: dk, valueGradient: dv, options: spec.options)
                    } } }
                  }
                } } } }
            }
            for buffer in [out, lse, dq, dk, dv] { XCTAssertTrue(buffer.viewHoldsSentinel, "wrote on error: \(message)") }
        }
    }
}
