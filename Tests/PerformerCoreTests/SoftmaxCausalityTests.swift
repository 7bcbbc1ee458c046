import PerformerCore
import XCTest

/// Causal masking is bottom-right aligned: query i sees key j iff j ≤ i + (L − N). Changing
/// anything a row must not see (queries, output gradients after it; keys and values after its
/// last visible key; padded keys) leaves that row's out, lse and dq bit-identical.
final class SoftmaxCausalityTests: XCTestCase {
    /// Copies of `inputs` with new random q, dout rows after `row`, and k, v rows after the
    /// row's last visible key.
    private func perturbedAfter(row i: Int, _ spec: SoftmaxCase, _ inputs: SoftmaxInputs, seed: UInt64) -> SoftmaxInputs {
        var rng = SplitMix64(seed: seed)
        var result = inputs
        let lastKey = i + spec.keys - spec.queries
        func scramble(_ tensor: inout DenseTensor, after last: Int) {
            for b in 0..<tensor.shape[0] { for h in 0..<tensor.shape[1] {
                for r in max(last + 1, 0)..<tensor.shape[2] { for c in 0..<tensor.shape[3] {
                    tensor[b, h, r, c] = 3 * rng.nextNormal()
                } }
            } }
        }
        scramble(&result.q, after: i)
        scramble(&result.dout, after: i)
        scramble(&result.k, after: lastKey)
        scramble(&result.v, after: lastKey)
        return result
    }

    private func checkRowsUnchanged<T: AttentionScalar>(_ spec: SoftmaxCase, as type: T.Type, seed: UInt64, rows: [Int],
                                                        file: StaticString = #filePath, line: UInt = #line) throws {
        let inputs = SoftmaxInputs.random(spec, seed: seed)
        try forEachSupportedISA { isa in
            let (_, base) = try SoftmaxHarness.run(spec, inputs, as: type)
            for i in rows {
                let changed = perturbedAfter(row: i, spec, inputs, seed: seed &+ UInt64(i) &+ 1)
                let (_, after) = try SoftmaxHarness.run(spec, changed, as: type)
                let label = "\(T.self) \(spec) rows ≤ \(i) isa=\(isa)"
                XCTAssertEqual(after.out.slicingRows(0..<(i + 1)), base.out.slicingRows(0..<(i + 1)), "out \(label)",
                               file: file, line: line)
                XCTAssertEqual(after.lse.slicingRows(0..<(i + 1)), base.lse.slicingRows(0..<(i + 1)), "lse \(label)",
                               file: file, line: line)
                XCTAssertEqual(after.dq!.slicingRows(0..<(i + 1)), base.dq!.slicingRows(0..<(i + 1)), "dq \(label)",
                               file: file, line: line)
                // The perturbation is real: the rows after i do change.
                if i + 1 < spec.queries {
                    let later = (i + 1)..<spec.queries
                    XCTAssertNotEqual(after.out.slicingRows(later), base.out.slicingRows(later), "later rows \(label)",
                                      file: file, line: line)
                }
            }
        }
    }

    func testCausalSquareRowsIgnoreLaterPositions() throws {
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 70, keys: 70, headDim: 16, valueDim: 8, causal: true)
        try checkRowsUnchanged(spec, as: Float.self, seed: 300, rows: [0, 15, 31, 32, 63, 64, 68])
        try checkRowsUnchanged(spec, as: Double.self, seed: 301, rows: [0, 47, 69])
    }

    func testCausalFewerQueriesThanKeysIsBottomRightAligned() throws {
        // Query i sees keys 0 ... i + 50; keys after that may change freely.
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 20, keys: 70, headDim: 16, valueDim: 8, causal: true)
        try checkRowsUnchanged(spec, as: Float.self, seed: 302, rows: [0, 13, 14, 18])
        try checkRowsUnchanged(spec, as: Double.self, seed: 303, rows: [0, 17])
    }

    func testCausalMoreQueriesThanKeysIsBottomRightAligned() throws {
        // Query i sees keys 0 ... i − 30: rows 0 ... 29 see none.
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 70, keys: 40, headDim: 16, valueDim: 8, causal: true)
        try checkRowsUnchanged(spec, as: Float.self, seed: 304, rows: [0, 29, 30, 31, 63, 66])
        try checkRowsUnchanged(spec, as: Double.self, seed: 305, rows: [30, 64])
    }

    func testCausalMaskIsNotTopLeftAligned() throws {
        // With N < L, top-left alignment (PyTorch is_causal) would hide key i + 1 from query i.
        // Here query 0 sees keys 0 ... L − N, so changing key L − N must change row 0.
        let spec = SoftmaxCase(batch: 1, queries: 4, keys: 9, headDim: 8, valueDim: 8, causal: true)
        let inputs = SoftmaxInputs.random(spec, seed: 306)
        var changed = inputs
        for c in 0..<spec.valueDim { changed.v[0, 0, 5, c] += 1 }
        var unseen = inputs
        for c in 0..<spec.valueDim { unseen.v[0, 0, 6, c] += 1 }
        try forEachSupportedISA { isa in
            let (_, base) = try SoftmaxHarness.run(spec, inputs, as: Double.self, backward: false)
            let (_, seenChange) = try SoftmaxHarness.run(spec, changed, as: Double.self, backward: false)
            let (_, unseenChange) = try SoftmaxHarness.run(spec, unseen, as: Double.self, backward: false)
            XCTAssertNotEqual(seenChange.out.slicingRows(0..<1), base.out.slicingRows(0..<1), "isa=\(isa)")
            XCTAssertEqual(unseenChange.out.slicingRows(0..<1), base.out.slicingRows(0..<1), "isa=\(isa)")
        }
    }

    func testPaddedKeysHaveNoInfluenceAndGetZeroGradients() throws {
        let spec = SoftmaxCase(batch: 3, heads: 2, keyHeads: 2, queries: 30, keys: 67, headDim: 16, valueDim: 8,
                               causal: false, keyLengths: [64, 1, 33])
        let inputs = SoftmaxInputs.random(spec, seed: 307)
        var changed = inputs
        var rng = SplitMix64(seed: 308)
        for b in 0..<3 { for h in 0..<2 { for j in spec.keyLengths![b]..<spec.keys {
            for c in 0..<spec.headDim { changed.k[b, h, j, c] = 10 * rng.nextNormal() }
            for c in 0..<spec.valueDim { changed.v[b, h, j, c] = 10 * rng.nextNormal() }
        } } }
        try forEachSupportedISA { isa in
            let (_, base) = try SoftmaxHarness.run(spec, inputs, as: Float.self)
            let (_, after) = try SoftmaxHarness.run(spec, changed, as: Float.self)
            XCTAssertEqual(after.out, base.out, "isa=\(isa)")
            XCTAssertEqual(after.lse, base.lse, "isa=\(isa)")
            XCTAssertEqual(after.dq, base.dq, "isa=\(isa)")
            for b in 0..<3 { for h in 0..<2 { for j in 0..<spec.keys {
                let padded = j >= spec.keyLengths![b]
                for c in 0..<spec.headDim where padded { XCTAssertEqual(after.dk![b, h, j, c], 0, "dk isa=\(isa)") }
                for c in 0..<spec.valueDim where padded { XCTAssertEqual(after.dv![b, h, j, c], 0, "dv isa=\(isa)") }
                if !padded {
                    // Unpadded keys' gradients do not depend on the padded keys either.
                    for c in 0..<spec.headDim { XCTAssertEqual(after.dk![b, h, j, c], base.dk![b, h, j, c], "dk isa=\(isa)") }
                }
            } } }
        }
    }
}
