import PerformerCore
import XCTest

/// Forward (out, lse) and backward (dq, dk, dv) against the float64 materialized reference on
/// random inputs, in float32 (relative error ≤ 1e-5) and float64 (≤ 1e-12), for every kernel
/// build the CPU runs.
final class SoftmaxReferenceTests: XCTestCase {
    static let float32Tolerance = 1e-5
    static let float64Tolerance = 1e-12

    /// Checks `spec` in both precisions on every supported ISA.
    private func checkAllISAs(_ spec: SoftmaxCase, seed: UInt64, layouts: SoftmaxLayouts = SoftmaxLayouts(),
                              file: StaticString = #filePath, line: UInt = #line) {
        let inputs = SoftmaxInputs.random(spec, seed: seed)
        forEachSupportedISA { _ in
            SoftmaxHarness.check(spec, as: Float.self, seed: seed, tolerance: Self.float32Tolerance,
                                 layouts: layouts, inputs: inputs, file: file, line: line)
            SoftmaxHarness.check(spec, as: Double.self, seed: seed, tolerance: Self.float64Tolerance,
                                 layouts: layouts, inputs: inputs, file: file, line: line)
        }
    }

    // MARK: the reference itself

    func testReferenceWithOneKeyReturnsThatValueAndItsScore() {
        var rng = SplitMix64(seed: 1)
        let q = DenseTensor.random(SIMD4(1, 1, 1, 3), &rng), k = DenseTensor.random(SIMD4(1, 1, 1, 3), &rng)
        let v = DenseTensor.random(SIMD4(1, 1, 1, 2), &rng)
        let result = SoftmaxReference.evaluate(q: q, k: k, v: v, options: SoftmaxAttentionOptions(scale: 0.7))
        XCTAssertEqual(result.out.values, v.values)
        let score = 0.7 * (0..<3).map { q[0, 0, 0, $0] * k[0, 0, 0, $0] }.reduce(0, +)
        XCTAssertEqual(result.lse[0, 0, 0, 0], score, accuracy: 1e-15)
    }

    func testReferenceWithEqualScoresAveragesTheVisibleValues() {
        // q = 0 makes every score 0: each row averages the values it sees, lse = log(count).
        var rng = SplitMix64(seed: 2)
        let spec = SoftmaxCase(batch: 1, queries: 3, keys: 5, headDim: 2, valueDim: 2, causal: true, keyLengths: [4])
        let q = DenseTensor(shape: spec.queryShape), k = DenseTensor.random(spec.keyShape, &rng)
        let v = DenseTensor.random(spec.valueShape, &rng)
        let result = SoftmaxReference.evaluate(q: q, k: k, v: v, options: spec.options)
        for i in 0..<3 {
            let seen = min(4, i + 2 + 1)  // causal offset L − N = 2, key limit 4
            XCTAssertEqual(result.lse[0, 0, i, 0], Foundation.log(Double(seen)), accuracy: 1e-15)
            for c in 0..<2 {
                let mean = (0..<seen).map { v[0, 0, $0, c] }.reduce(0, +) / Double(seen)
                XCTAssertEqual(result.out[0, 0, i, c], mean, accuracy: 1e-14)
            }
        }
    }

    // MARK: shapes

    func testQueriesFewerThanKeysNotCausal() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 17, keys: 33, headDim: 16, valueDim: 24), seed: 10)
    }

    func testQueriesMoreThanKeysNotCausal() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 1, queries: 49, keys: 31, headDim: 16, valueDim: 8), seed: 11)
    }

    func testCausalSquare() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 65, keys: 65, headDim: 16, valueDim: 16, causal: true), seed: 12)
    }

    /// The Llama attention's shape: D = M = 32 (the V, dV and dK products end in 4-row tiles),
    /// GQA 8 on 2, causal bottom-right with L ≠ N, N not a multiple of the query blocks, q, out
    /// and dq in the model's B×N×H×D order, k reversed with gaps.
    func testHeadDim32GroupedCausalBottomRightModelLayout() {
        checkAllISAs(SoftmaxCase(batch: 1, heads: 8, keyHeads: 2, queries: 70, keys: 131, headDim: 32, valueDim: 32,
                                 causal: true),
                     seed: 91, layouts: SoftmaxLayouts(q: .sequenceMajor, k: .reversedWithGaps, out: .sequenceMajor,
                                                       dq: .sequenceMajor))
    }

    /// Heights ending in every kind of short tile: D = 29 (a remainder of 5 in a partial full
    /// tile), M = 26 (6·3 + 4·2), GQA, causal with key lengths.
    func testOddHeadDimsEndingInShortTilesWithKeyLengths() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 100, keys: 100, headDim: 29, valueDim: 26,
                                 causal: true, keyLengths: [77, 100]), seed: 92)
    }

    func testCausalBottomRightAlignedWithFewerQueries() {
        // KV-cache shape: every query sees the whole prefix; the last sees every key.
        checkAllISAs(SoftmaxCase(queries: 15, keys: 97, headDim: 63, valueDim: 32, causal: true), seed: 13)
    }

    func testCausalBottomRightAlignedWithMoreQueriesMasksEarlyRows() {
        checkAllISAs(SoftmaxCase(batch: 2, queries: 97, keys: 47, headDim: 16, valueDim: 5, causal: true), seed: 14)
    }

    func testSingleQuery() {
        for causal in [false, true] {
            checkAllISAs(SoftmaxCase(batch: 2, queries: 1, keys: 129, headDim: 64, valueDim: 64, causal: causal), seed: 15)
        }
    }

    func testSingleKey() {
        for causal in [false, true] {
            checkAllISAs(SoftmaxCase(batch: 2, queries: 33, keys: 1, headDim: 64, valueDim: 48, causal: causal), seed: 16)
        }
    }

    func testSingleQueryAndKey() {
        checkAllISAs(SoftmaxCase(queries: 1, keys: 1, headDim: 7, valueDim: 3), seed: 17)
    }

    func testValueWidthDiffersFromHeadDim() {
        checkAllISAs(SoftmaxCase(queries: 20, keys: 36, headDim: 16, valueDim: 1), seed: 18)
        checkAllISAs(SoftmaxCase(queries: 20, keys: 36, headDim: 1, valueDim: 16, causal: true), seed: 19)
        checkAllISAs(SoftmaxCase(queries: 20, keys: 36, headDim: 24, valueDim: 130), seed: 20)
    }

    func testHeadDimSweep() {
        for (index, d) in [1, 16, 63, 64, 128, 256].enumerated() {
            let m = d == 256 ? 96 : d
            checkAllISAs(SoftmaxCase(queries: 31, keys: 47, headDim: d, valueDim: m, causal: index % 2 == 1),
                         seed: 30 + UInt64(d))
        }
    }

    func testExplicitScale() {
        checkAllISAs(SoftmaxCase(queries: 19, keys: 23, headDim: 8, valueDim: 8, scale: 0.9), seed: 40)
        checkAllISAs(SoftmaxCase(queries: 19, keys: 23, headDim: 8, valueDim: 8, causal: true, scale: -0.25), seed: 41)
        // Scale 0: uniform attention over the visible keys.
        checkAllISAs(SoftmaxCase(queries: 19, keys: 23, headDim: 8, valueDim: 8, causal: true, scale: 0), seed: 42)
    }

    // MARK: grouped-query attention

    func testGroupedQueryAttentionTwoKeyHeads() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 21, keys: 35, headDim: 16, valueDim: 12), seed: 50)
        checkAllISAs(SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 35, keys: 21, headDim: 16, valueDim: 12,
                                 causal: true, keyLengths: [17, 21]), seed: 51)
    }

    func testGroupedQueryAttentionOneKeyHead() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 4, keyHeads: 1, queries: 33, keys: 33, headDim: 16, valueDim: 16,
                                 causal: true), seed: 52)
        checkAllISAs(SoftmaxCase(batch: 3, heads: 4, keyHeads: 1, queries: 9, keys: 40, headDim: 8, valueDim: 20,
                                 keyLengths: [40, 0, 13]), seed: 53)
    }

    // MARK: key padding

    func testKeyLengthsZeroFullAndBetween() {
        checkAllISAs(SoftmaxCase(batch: 3, heads: 2, keyHeads: 2, queries: 25, keys: 70, headDim: 16, valueDim: 16,
                                 keyLengths: [0, 70, 33]), seed: 60)
    }

    func testKeyLengthsWithCausalMask() {
        // Causal and padding together; kv_len 65 ends past a 64-key block, 1 keeps one key.
        checkAllISAs(SoftmaxCase(batch: 3, queries: 70, keys: 70, headDim: 16, valueDim: 8, causal: true,
                                 keyLengths: [65, 1, 70]), seed: 61)
        checkAllISAs(SoftmaxCase(batch: 2, queries: 12, keys: 80, headDim: 16, valueDim: 8, causal: true,
                                 keyLengths: [0, 71]), seed: 62)
    }

    // MARK: block boundaries of tiled kernels

    func testSizesStraddlingTileBoundaries() {
        // N and L one below, at and one above multiples of 16, 32, 48, 64, 96 and 128.
        let pairs = [(15, 17), (16, 32), (31, 33), (47, 49), (48, 96), (63, 65), (64, 64), (65, 63),
                     (95, 97), (96, 128), (127, 129), (129, 127)]
        for (index, (n, l)) in pairs.enumerated() {
            let spec = SoftmaxCase(queries: n, keys: l, headDim: index % 2 == 0 ? 32 : 17, valueDim: index % 3 == 0 ? 16 : 33,
                                   causal: index % 2 == 1)
            checkAllISAs(spec, seed: 70 + UInt64(index))
        }
    }

    func testModeratelySizedSquareHead() {
        for causal in [false, true] {
            checkAllISAs(SoftmaxCase(queries: 300, keys: 300, headDim: 64, valueDim: 64, causal: causal), seed: 90)
        }
    }

    func testModeratelySizedRectangularWithPadding() {
        checkAllISAs(SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 100, keys: 260, headDim: 64, valueDim: 40,
                                 causal: true, keyLengths: [193, 260]), seed: 91)
    }

    // MARK: forward alone

    func testForwardWithoutLogSumExpMatchesForwardWithIt() throws {
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 37, keys: 29, headDim: 16, valueDim: 16, causal: true)
        let inputs = SoftmaxInputs.random(spec, seed: 95)
        try forEachSupportedISA { isa in
            let (_, withLSE) = try SoftmaxHarness.run(spec, inputs, as: Float.self, backward: false)
            let q = inputs.q.tensor(Float.self), k = inputs.k.tensor(Float.self), v = inputs.v.tensor(Float.self)
            var out = try Tensor<Float>(shape: spec.outputShape, repeating: .nan)
            try q.withView { q in try k.withView { k in try v.withView { v in
                try out.withMutableView { out in
                    try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, options: spec.options)
                }
            } } }
            XCTAssertEqual(DenseTensor(out), withLSE.out, "isa=\(isa)")
        }
    }
}
