import PerformerCore
import XCTest

/// The softmax backward of a head with few queries × keys (n · L ≤ 8: a decode step's backward)
/// takes a path without the tiled machinery (SoftmaxBackwardSmall.swift). Attacked at the
/// shapes it covers: L = 1, N = 1, every key masked (kv_lengths 0, kv_starts = L, causal rows
/// before the first key), grouped heads, strided and permuted views; against the float64
/// reference, and bit for bit against the tiled kernel the same call takes in a large call's layout.
final class SoftmaxSmallBackwardTests: XCTestCase {
    static let cases: [SoftmaxCase] = [
        SoftmaxCase(batch: 1, heads: 8, keyHeads: 8, queries: 1, keys: 1, headDim: 64, valueDim: 64),
        SoftmaxCase(batch: 1, heads: 1, keyHeads: 1, queries: 1, keys: 1, headDim: 64, valueDim: 64, causal: true),
        SoftmaxCase(batch: 2, heads: 6, keyHeads: 2, queries: 2, keys: 3, headDim: 5, valueDim: 7),
        SoftmaxCase(batch: 1, heads: 4, keyHeads: 1, queries: 1, keys: 8, headDim: 3, valueDim: 2, scale: 0.7),
        SoftmaxCase(batch: 1, heads: 2, keyHeads: 2, queries: 8, keys: 1, headDim: 9, valueDim: 4),
        // Causal with N > L: the first rows see no key.
        SoftmaxCase(batch: 1, heads: 2, keyHeads: 1, queries: 4, keys: 2, headDim: 6, valueDim: 3, causal: true),
        // Key ranges: all keys, a middle range, none (start = length), none (length 0).
        SoftmaxCase(batch: 4, heads: 2, keyHeads: 2, queries: 1, keys: 8, headDim: 8, valueDim: 8,
                    keyLengths: [8, 6, 8, 0], keyStarts: [0, 3, 8, 0]),
        SoftmaxCase(batch: 2, heads: 3, keyHeads: 1, queries: 2, keys: 4, headDim: 4, valueDim: 5, causal: true,
                    keyLengths: [3, 4], keyStarts: [1, 4]),
    ]

    static let stridedLayouts: SoftmaxLayouts = {
        var layouts = SoftmaxLayouts()
        layouts.q = .sequenceMajor
        layouts.k = .reversedWithGaps
        layouts.v = .columnMajor
        layouts.dout = .allReversed
        layouts.dq = .allReversed
        layouts.dk = .columnMajor
        layouts.dv = .reversedWithGaps
        return layouts
    }()

    func testSmallShapesMatchFloat64ReferenceWithMaskedKeysGroupsAndStridedViews() {
        forEachSupportedISA { isa in
            for (index, spec) in Self.cases.enumerated() {
                for layouts in [SoftmaxLayouts(), Self.stridedLayouts] {
                    SoftmaxHarness.check(spec, as: Float.self, seed: 4100 + UInt64(index), tolerance: 2e-5,
                                         layouts: layouts, context: isa)
                    SoftmaxHarness.check(spec, as: Double.self, seed: 4100 + UInt64(index), tolerance: 1e-11,
                                         layouts: layouts, context: isa)
                }
            }
        }
    }

    /// With no inline limit and two threads, one key head with one query head takes the split
    /// layout (tiled query and key passes); inline it takes the small path: the same bits.
    func testSmallPathGivesTheTiledKernelsBits() throws {
        let singleHead = Self.cases.filter { $0.heads == $0.keyHeads && $0.batch * $0.keyHeads == 1 } + [
            SoftmaxCase(batch: 1, heads: 1, keyHeads: 1, queries: 2, keys: 4, headDim: 5, valueDim: 3, causal: true),
            SoftmaxCase(batch: 1, heads: 1, keyHeads: 1, queries: 1, keys: 8, headDim: 7, valueDim: 6,
                        keyLengths: [6], keyStarts: [2]),
            SoftmaxCase(batch: 1, heads: 1, keyHeads: 1, queries: 8, keys: 1, headDim: 33, valueDim: 17, scale: 3),
        ]
        XCTAssertGreaterThanOrEqual(singleHead.count, 4)
        let (threads, limit) = (Runtime.numThreads, Runtime.inlineWorkLimit)
        defer {
            try! Runtime.setNumThreads(threads)
            Runtime.inlineWorkLimit = limit
        }
        try forEachSupportedISA { isa in
            for (index, spec) in singleHead.enumerated() {
                let inputs = SoftmaxInputs.random(spec, seed: 4200 + UInt64(index))
                try compareLayouts(spec, inputs, as: Float.self, isa: isa)
                try compareLayouts(spec, inputs, as: Double.self, isa: isa)
            }
        }
    }

    private func compareLayouts<T: AttentionScalar>(_ spec: SoftmaxCase, _ inputs: SoftmaxInputs, as type: T.Type,
                                                    isa: String) throws {
        try Runtime.setNumThreads(1)
        Runtime.inlineWorkLimit = 1 << 19
        let small = try SoftmaxHarness.run(spec, inputs, as: type).outputs
        try Runtime.setNumThreads(2)
        Runtime.inlineWorkLimit = 0
        let tiled = try SoftmaxHarness.run(spec, inputs, as: type).outputs
        Runtime.inlineWorkLimit = 1 << 19
        for ((name, x), (_, y)) in zip(small.all, tiled.all) {
            XCTAssertEqual(x.values.map(\.bitPattern), y.values.map(\.bitPattern), "\(name) \(T.self) \(spec) isa=\(isa)")
        }
    }
}
