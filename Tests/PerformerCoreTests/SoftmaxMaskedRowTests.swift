import PerformerCore
import XCTest

/// Rows that see no key (kv_len = 0, causal with N > L, L = 0) give out = 0, lse = −inf and zero
/// gradients, with no NaN anywhere; empty problems write what they must and nothing else; rows
/// whose scores are all huge or all very negative are neither overflowed nor mistaken for masked.
final class SoftmaxMaskedRowTests: XCTestCase {
    private func assertNoNaN(_ outputs: SoftmaxOutputs, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        for (name, tensor) in outputs.all {
            XCTAssertFalse(tensor.containsNaN, "\(name) has NaN: \(label)", file: file, line: line)
            XCTAssertFalse(tensor.values.contains { $0 == .infinity }, "\(name) has +inf: \(label)", file: file, line: line)
        }
    }

    private func checkEmptyRows<T: AttentionScalar>(_ spec: SoftmaxCase, as type: T.Type, seed: UInt64,
                                                    emptyRows: (_ batch: Int, _ row: Int) -> Bool) throws {
        let inputs = SoftmaxInputs.random(spec, seed: seed)
        try forEachSupportedISA { isa in
            let (seen, outputs) = try SoftmaxHarness.run(spec, inputs, as: type)
            let label = "\(T.self) \(spec) isa=\(isa)"
            assertNoNaN(outputs, label)
            var emptyCount = 0
            for b in 0..<spec.batch { for h in 0..<spec.heads { for i in 0..<spec.queries where emptyRows(b, i) {
                emptyCount += 1
                XCTAssertEqual(outputs.lse[b, h, i, 0], -.infinity, "lse[\(b),\(h),\(i)] \(label)")
                for c in 0..<spec.valueDim {
                    XCTAssertEqual(outputs.out[b, h, i, c], 0, "out[\(b),\(h),\(i),\(c)] \(label)")
                }
                for c in 0..<spec.headDim {
                    XCTAssertEqual(outputs.dq![b, h, i, c], 0, "dq[\(b),\(h),\(i),\(c)] \(label)")
                }
            } } }
            XCTAssertGreaterThan(emptyCount, 0, "case has no empty row")
            // The rest still matches the reference.
            let reference = seen.reference(spec)
            let tolerance = T.self == Float.self ? 1e-5 : 1e-12
            for (name, actual, wanted) in [("out", outputs.out, reference.out), ("lse", outputs.lse, reference.lse),
                                           ("dq", outputs.dq!, reference.dq), ("dk", outputs.dk!, reference.dk),
                                           ("dv", outputs.dv!, reference.dv)] {
                XCTAssertLessThanOrEqual(relativeError(actual, wanted), tolerance, "\(name) \(label)")
            }
        }
    }

    func testZeroKeyLengthGivesZeroRowsAndZeroGradients() throws {
        let spec = SoftmaxCase(batch: 3, heads: 2, keyHeads: 1, queries: 33, keys: 20, headDim: 16, valueDim: 8,
                               keyLengths: [0, 20, 0])
        try checkEmptyRows(spec, as: Float.self, seed: 400) { b, _ in b != 1 }
        try checkEmptyRows(spec, as: Double.self, seed: 401) { b, _ in b != 1 }
        // dk and dv of a batch with no visible key are exactly zero.
        let (_, outputs) = try SoftmaxHarness.run(spec, SoftmaxInputs.random(spec, seed: 402), as: Float.self)
        for b in [0, 2] { for j in 0..<spec.keys {
            for c in 0..<spec.headDim { XCTAssertEqual(outputs.dk![b, 0, j, c], 0) }
            for c in 0..<spec.valueDim { XCTAssertEqual(outputs.dv![b, 0, j, c], 0) }
        } }
    }

    func testCausalWithMoreQueriesThanKeysGivesEmptyEarlyRows() throws {
        // Row i sees keys j ≤ i − 60: rows 0 ... 59 are empty, more than a 32- or 48-row block.
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 100, keys: 40, headDim: 16, valueDim: 16, causal: true)
        try checkEmptyRows(spec, as: Float.self, seed: 403) { _, i in i < 60 }
        try checkEmptyRows(spec, as: Double.self, seed: 404) { _, i in i < 60 }
    }

    func testCausalAndKeyLengthTogetherEmptyRows() throws {
        // N = 40, L = 20 causal: rows 0 ... 19 see no key in any batch. Batch 0 also pads to 5
        // keys, kv_len 0 empties every row of batch 1, batch 2 has only the causal mask.
        let spec = SoftmaxCase(batch: 3, queries: 40, keys: 20, headDim: 8, valueDim: 8, causal: true, keyLengths: [5, 0, 20])
        try checkEmptyRows(spec, as: Float.self, seed: 405) { b, i in b == 1 || i < 20 }
    }

    func testNoKeysAtAll() throws {
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 9, keys: 0, headDim: 4, valueDim: 3)
        try checkEmptyRows(spec, as: Float.self, seed: 406) { _, _ in true }
        var causal = spec
        causal.causal = true
        try checkEmptyRows(causal, as: Double.self, seed: 407) { _, _ in true }
    }

    func testNoQueriesStillZeroesKeyGradients() throws {
        // N = 0: nothing depends on k or v, so dk and dv must be written as zeros (their buffers
        // start as a sentinel), and dq (empty) untouched.
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 0, keys: 70, headDim: 8, valueDim: 5, causal: true)
        try forEachSupportedISA { isa in
            let (_, outputs) = try SoftmaxHarness.run(spec, SoftmaxInputs.random(spec, seed: 408), as: Float.self)
            XCTAssertTrue(outputs.dk!.values.allSatisfy { $0 == 0 }, "dk isa=\(isa)")
            XCTAssertTrue(outputs.dv!.values.allSatisfy { $0 == 0 }, "dv isa=\(isa)")
            XCTAssertTrue(outputs.wroteOnlyInsideViews, "isa=\(isa)")
        }
    }

    func testZeroValueWidthStillGivesLogSumExpAndZeroGradients() throws {
        let spec = SoftmaxCase(batch: 2, queries: 20, keys: 30, headDim: 8, valueDim: 0, causal: true, keyLengths: [30, 7])
        try forEachSupportedISA { isa in
            let (seen, outputs) = try SoftmaxHarness.run(spec, SoftmaxInputs.random(spec, seed: 409), as: Double.self)
            XCTAssertLessThanOrEqual(relativeError(outputs.lse, seen.reference(spec).lse), 1e-12, "isa=\(isa)")
            XCTAssertTrue(outputs.dq!.values.allSatisfy { $0 == 0 }, "dq isa=\(isa)")
            XCTAssertTrue(outputs.dk!.values.allSatisfy { $0 == 0 }, "dk isa=\(isa)")
        }
    }

    func testRowsWithOnlyVeryNegativeScoresAreNotTreatedAsMasked() throws {
        // Every score is about −2000: exp underflows unless the row maximum is subtracted, but
        // the softmax is still well defined and lse is finite.
        let spec = SoftmaxCase(batch: 1, queries: 37, keys: 70, headDim: 4, valueDim: 6, causal: true, scale: 1)
        var inputs = SoftmaxInputs.random(spec, seed: 410)
        var rng = SplitMix64(seed: 411)
        for i in 0..<spec.queries { for c in 0..<4 { inputs.q[0, 0, i, c] = c == 0 ? 40 : 0 } }
        for j in 0..<spec.keys { for c in 0..<4 { inputs.k[0, 0, j, c] = c == 0 ? -50 + 0.05 * rng.nextNormal() : 1 } }
        try forEachSupportedISA { isa in
            SoftmaxHarness.check(spec, as: Double.self, seed: 410, tolerance: 1e-12, inputs: inputs, context: "very negative")
            let (seen, outputs) = try SoftmaxHarness.run(spec, inputs, as: Float.self)
            assertNoNaN(outputs, "isa=\(isa)")
            XCTAssertTrue(outputs.lse.values.allSatisfy { $0.isFinite && $0 < -1900 }, "lse isa=\(isa)")
            // float32 scores near −2000 carry absolute rounding ~1e-4, so a looser bound here.
            XCTAssertLessThanOrEqual(relativeError(outputs.out, seen.reference(spec).out), 1e-3, "out isa=\(isa)")
        }
    }

    func testHugeScoresDoNotOverflow() throws {
        // Scores up to several thousand: exp(score) overflows float32 and float64 unless the
        // running maximum is subtracted first.
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 50, keys: 90, headDim: 16, valueDim: 8,
                               causal: true, scale: 40)
        var inputs = SoftmaxInputs.random(spec, seed: 412)
        inputs.q.values = inputs.q.values.map { $0 * 3 }
        try forEachSupportedISA { isa in
            SoftmaxHarness.check(spec, as: Double.self, seed: 412, tolerance: 1e-11, inputs: inputs, context: "huge scores")
            let (seen, outputs) = try SoftmaxHarness.run(spec, inputs, as: Float.self)
            assertNoNaN(outputs, "isa=\(isa)")
            XCTAssertTrue(outputs.out.values.allSatisfy { $0.isFinite }, "out isa=\(isa)")
            XCTAssertTrue(outputs.lse.values.allSatisfy { $0.isFinite }, "lse isa=\(isa)")
            XCTAssertTrue(outputs.lse.values.contains { $0 > 1000 }, "case does not reach huge scores")
            XCTAssertLessThanOrEqual(relativeError(outputs.out, seen.reference(spec).out), 1e-2, "out isa=\(isa)")
        }
    }
}

extension SoftmaxMaskedRowTests {
    func testEmptyBatchOrZeroQueryHeadsSucceedAndZeroKeyGradients() throws {
        for spec in [SoftmaxCase(batch: 0, heads: 2, keyHeads: 1, queries: 5, keys: 7, headDim: 4, valueDim: 3, causal: true),
                     SoftmaxCase(batch: 2, heads: 0, keyHeads: 1, queries: 5, keys: 7, headDim: 4, valueDim: 3)] {
            try forEachSupportedISA { isa in
                let (_, outputs) = try SoftmaxHarness.run(spec, SoftmaxInputs.random(spec, seed: 413), as: Float.self)
                XCTAssertTrue(outputs.wroteOnlyInsideViews, "\(spec) isa=\(isa)")
                // With no query heads nothing depends on k or v: their gradients are written as zeros.
                XCTAssertTrue(outputs.dk!.values.allSatisfy { $0 == 0 }, "dk \(spec) isa=\(isa)")
                XCTAssertTrue(outputs.dv!.values.allSatisfy { $0 == 0 }, "dv \(spec) isa=\(isa)")
            }
        }
    }
}
