import XCTest
import PerformerCore

/// The few-query forward (N ≤ SoftmaxAttention.rowPathMaxQueries = 12: decoding with a KV cache)
/// and its split over key chunks: against the float64 reference on every kernel build, with
/// masks cutting inside chunks, grouped heads, strided and reversed K/V (including column
/// stride ≠ 1), fully masked rows; bit-identical for any thread count; and the backward run
/// from this path's lse.
final class SoftmaxFewQueryTests: XCTestCase {
    private func withThreadCount<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        try! Runtime.setNumThreads(n)
        return try body()
    }

    func testThresholdCoversDecodingShapes() {
        XCTAssertGreaterThanOrEqual(SoftmaxAttention.rowPathMaxQueries, 1)
        XCTAssertEqual(SoftmaxAttention.rowChunkKeys % 64, 0)
    }

    /// N = 1 ... 8 (and the first N past the threshold), causal and not, L around and across
    /// the 512-key chunk and the 64-key block, every ISA, float32 and float64.
    func testEveryQueryCountMatchesReference() throws {
        let threshold = SoftmaxAttention.rowPathMaxQueries
        try forEachSupportedISA { isa in
            for n in Array(1...threshold) + [threshold + 1] {
                for (l, causal) in [(1, false), (n, true), (63, true), (65, false), (700, true), (1500, false)] {
                    let spec = SoftmaxCase(heads: 2, keyHeads: 1, queries: n, keys: l, headDim: 24 + n, valueDim: 40 - n,
                                           causal: causal)
                    let seed = UInt64(1000 + 17 * n + l)
                    SoftmaxHarness.check(spec, as: Float.self, seed: seed, tolerance: 1e-5, context: isa)
                    SoftmaxHarness.check(spec, as: Double.self, seed: seed, tolerance: 1e-12, context: isa)
                }
            }
        }
    }

    /// Long caches split into chunks, kv_len cutting inside a chunk (and inside a 64-key block),
    /// kv_len = 0, causal N < L, grouped-query heads split over several row sets, head sizes that
    /// are not multiples of any vector width, D = 256.
    func testSplitKeysWithMasksAndGroups() throws {
        let cases: [SoftmaxCase] = [
            SoftmaxCase(batch: 3, heads: 2, keyHeads: 2, queries: 1, keys: 2600, headDim: 64, valueDim: 64,
                        causal: true, keyLengths: [700, 0, 1025]),
            SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 3, keys: 1537, headDim: 17, valueDim: 5,
                        causal: true, keyLengths: [1537, 513]),
            SoftmaxCase(heads: 12, keyHeads: 1, queries: 3, keys: 1100, headDim: 7, valueDim: 70),
            SoftmaxCase(heads: 8, keyHeads: 2, queries: 8, keys: 3000, headDim: 33, valueDim: 31, causal: true,
                        keyLengths: [2999]),
            SoftmaxCase(heads: 1, queries: 2, keys: 900, headDim: 256, valueDim: 256, causal: true, scale: 0.3),
            // Many row sets: chunks become longer than 512 keys (and a single chunk at the end).
            SoftmaxCase(batch: 2, heads: 50, keyHeads: 50, queries: 1, keys: 1300, headDim: 4, valueDim: 3),
            SoftmaxCase(batch: 1, heads: 300, keyHeads: 300, queries: 1, keys: 600, headDim: 2, valueDim: 2,
                        causal: true),
        ]
        try forEachSupportedISA { isa in
            for (index, spec) in cases.enumerated() {
                let seed = UInt64(2000 + index)
                SoftmaxHarness.check(spec, as: Float.self, seed: seed, tolerance: 1e-5, context: isa)
                SoftmaxHarness.check(spec, as: Double.self, seed: seed, tolerance: 1e-12, backward: index < 5,
                                     context: isa)
            }
        }
    }

    /// Queries that see no key (causal N > L, kv_len = 0, L = 0): zero rows, lse = −inf, no NaN.
    func testFullyMaskedRowsGiveZerosAndNegativeInfinity() throws {
        let cases: [SoftmaxCase] = [
            SoftmaxCase(queries: 6, keys: 2, headDim: 8, valueDim: 8, causal: true),
            SoftmaxCase(batch: 2, queries: 1, keys: 600, headDim: 8, valueDim: 8, keyLengths: [0, 600]),
            SoftmaxCase(queries: 4, keys: 0, headDim: 8, valueDim: 8),
        ]
        try forEachSupportedISA { isa in
            for (index, spec) in cases.enumerated() {
                SoftmaxHarness.check(spec, as: Float.self, seed: UInt64(3000 + index), tolerance: 1e-5, context: isa)
                SoftmaxHarness.check(spec, as: Double.self, seed: UInt64(3000 + index), tolerance: 1e-12, context: isa)
                let (_, outputs) = try SoftmaxHarness.run(spec, SoftmaxInputs.random(spec, seed: 9), as: Float.self,
                                                          backward: false)
                for i in 0..<spec.queries {
                    let sees = spec.keys > 0 && (spec.keyLengths?[0] ?? spec.keys) > 0
                        && (!spec.causal || i + spec.keys - spec.queries >= 0)
                    if !sees {
                        XCTAssertEqual(outputs.lse.values[i], -.infinity, "\(isa) \(spec) row \(i)")
                        for m in 0..<spec.valueDim { XCTAssertEqual(outputs.out.values[i * spec.valueDim + m], 0) }
                    }
                }
            }
        }
    }

    /// K and V through permuted, reversed, gapped and column-major layouts (column stride ≠ 1
    /// takes the packing path; negative strides read backwards), with outputs strided too.
    func testStridedKeysAndValues() throws {
        let spec = SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 2, keys: 1100, headDim: 20, valueDim: 36,
                               causal: true, keyLengths: [1100, 650])
        let layouts: [SoftmaxLayouts] = [
            SoftmaxLayouts(q: .sequenceMajor, k: .sequenceMajor, v: .sequenceMajor, out: .sequenceMajor),
            SoftmaxLayouts(q: .columnMajor, k: .columnMajor, v: .columnMajor, out: .columnMajor, lse: .allReversed),
            SoftmaxLayouts(q: .reversedWithGaps, k: .reversedWithGaps, v: .reversedWithGaps, out: .reversedWithGaps),
            SoftmaxLayouts(q: .allReversed, k: .allReversed, v: .columnMajor, out: .allReversed),
            SoftmaxLayouts(k: .columnMajor, v: .reversedWithGaps),
        ]
        try forEachSupportedISA { isa in
            for (index, layout) in layouts.enumerated() {
                SoftmaxHarness.check(spec, as: Float.self, seed: UInt64(4000 + index), tolerance: 1e-5, layouts: layout,
                                     context: "\(isa) layout \(index)")
                SoftmaxHarness.check(spec, as: Double.self, seed: UInt64(4000 + index), tolerance: 1e-12,
                                     layouts: layout, backward: false, context: "\(isa) layout \(index)")
            }
        }
    }

    /// Split-key results do not depend on the thread count, bit for bit (1, 2, 3 threads).
    func testThreadCountDoesNotChangeAnyBit() throws {
        let cases: [SoftmaxCase] = [
            SoftmaxCase(queries: 1, keys: 5000, headDim: 64, valueDim: 64, causal: true),
            SoftmaxCase(heads: 8, keyHeads: 8, queries: 1, keys: 2100, headDim: 64, valueDim: 64, causal: true),
            SoftmaxCase(batch: 2, heads: 6, keyHeads: 2, queries: 5, keys: 1700, headDim: 19, valueDim: 23, causal: true,
                        keyLengths: [1600, 777]),
        ]
        try forEachSupportedISA { isa in
            for (index, spec) in cases.enumerated() {
                let inputs = SoftmaxInputs.random(spec, seed: UInt64(5000 + index))
                let single = try withThreadCount(1) { try SoftmaxHarness.run(spec, inputs, as: Float.self, backward: false).outputs }
                let singleDouble = try withThreadCount(1) {
                    try SoftmaxHarness.run(spec, inputs, as: Double.self, backward: false).outputs
                }
                for threads in [2, 3] {
                    let multi = try withThreadCount(threads) {
                        try SoftmaxHarness.run(spec, inputs, as: Float.self, backward: false).outputs
                    }
                    let multiDouble = try withThreadCount(threads) {
                        try SoftmaxHarness.run(spec, inputs, as: Double.self, backward: false).outputs
                    }
                    for ((name, x), (_, y)) in zip(multi.all + multiDouble.all, single.all + singleDouble.all) {
                        XCTAssertEqual(x.values.map(\.bitPattern), y.values.map(\.bitPattern),
                                       "\(name) \(spec) threads=\(threads) isa=\(isa)")
                    }
                }
            }
        }
    }

    /// The few-query path and the tiled path compute the same function: forcing the tiled path
    /// (threshold 0) agrees with the default to float32 rounding.
    func testAgreesWithTiledPath() throws {
        let spec = SoftmaxCase(heads: 2, queries: 4, keys: 1300, headDim: 32, valueDim: 32, causal: true,
                               keyLengths: [1200])
        let inputs = SoftmaxInputs.random(spec, seed: 6000)
        let rows = try SoftmaxHarness.run(spec, inputs, as: Double.self, backward: false).outputs
        let original = SoftmaxAttention.rowPathMaxQueries
        SoftmaxAttention.rowPathMaxQueries = 0
        defer { SoftmaxAttention.rowPathMaxQueries = original }
        let tiled = try SoftmaxHarness.run(spec, inputs, as: Double.self, backward: false).outputs
        XCTAssertLessThanOrEqual(relativeError(rows.out, tiled.out), 1e-12)
        XCTAssertLessThanOrEqual(relativeError(rows.lse, tiled.lse), 1e-12)
    }
}
