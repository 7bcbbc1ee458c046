import PerformerCore
import XCTest

/// A fixed-seed sweep over random problems: sizes drawn around tile boundaries, random head
/// grouping, causal or not, random key lengths, and a random memory layout for every tensor.
/// Each case is checked against the float64 reference in float32 and float64 on every ISA;
/// a failure message carries the case seed so it can be replayed alone.
final class SoftmaxRandomizedTests: XCTestCase {
    private static let boundaries = [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 95, 96, 97, 127, 128, 129, 160]
    private static let headDims = [1, 2, 3, 5, 8, 16, 24, 31, 32, 33, 63, 64, 65, 96, 128, 256]
    private static let layouts: [Layout] = [
        .contiguous, .contiguous, .sequenceMajor, .columnMajor, .reversedWithGaps, .allReversed,
        Layout(order: [2, 0, 3, 1], gap: 1), Layout(order: [0, 1, 3, 2], reversed: [1, 3]),
    ]

    /// A random case of bounded cost for seed `seed`.
    static func randomCase(seed: UInt64) -> (SoftmaxCase, SoftmaxLayouts) {
        var rng = SplitMix64(seed: seed)
        func pick<T>(_ list: [T]) -> T { list[rng.nextInt(in: 0...(list.count - 1))] }
        var spec: SoftmaxCase
        repeat {
            let keyHeads = rng.nextInt(in: 1...2)
            let n = rng.nextUniform() < 0.7 ? pick(boundaries) : rng.nextInt(in: 1...200)
            let l = rng.nextUniform() < 0.7 ? pick(boundaries) : rng.nextInt(in: 1...200)
            let d = pick(headDims)
            let m = rng.nextUniform() < 0.4 ? d : pick(headDims)
            spec = SoftmaxCase(batch: rng.nextInt(in: 1...3), heads: keyHeads * rng.nextInt(in: 1...3), keyHeads: keyHeads,
                               queries: n, keys: l, headDim: d, valueDim: m, causal: rng.nextUniform() < 0.5)
            if rng.nextUniform() < 0.5 {
                spec.keyLengths = (0..<spec.batch).map { _ in
                    switch rng.nextInt(in: 0...3) {
                    case 0: return 0
                    case 1: return l
                    default: return rng.nextInt(in: 0...l)
                    }
                }
            }
            // An explicit scale within ±1.5× the default: a much sharper softmax makes float32 score
            // rounding (∝ scale · Σ|q·k|), not the kernel, dominate the error.
            if rng.nextUniform() < 0.2 { spec.scale = rng.nextUniform(in: -1.5..<1.5) / Double(d).squareRoot() }
        } while spec.batch * spec.heads * spec.queries * spec.keys * (spec.headDim + spec.valueDim) > 2_500_000
        var chosen = SoftmaxLayouts()
        chosen.q = pick(layouts); chosen.k = pick(layouts); chosen.v = pick(layouts); chosen.dout = pick(layouts)
        chosen.out = pick(layouts); chosen.lse = pick(layouts)
        chosen.dq = pick(layouts); chosen.dk = pick(layouts); chosen.dv = pick(layouts)
        return (spec, chosen)
    }

    func testRandomProblemsWithRandomLayoutsMatchTheReference() {
        var worst32 = 0.0, worst64 = 0.0
        for index in 0..<80 {
            let seed = 9000 + UInt64(index)
            let (spec, layouts) = Self.randomCase(seed: seed)
            let inputs = SoftmaxInputs.random(spec, seed: seed)
            forEachSupportedISA { _ in
                worst32 = max(worst32, SoftmaxHarness.check(spec, as: Float.self, seed: seed, tolerance: 1e-5, layouts: layouts,
                                                            inputs: inputs, context: "random case"))
                worst64 = max(worst64, SoftmaxHarness.check(spec, as: Double.self, seed: seed, tolerance: 1e-12, layouts: layouts,
                                                            inputs: inputs, context: "random case"))
            }
        }
        print("SoftmaxRandomizedTests: worst relative error float32 \(worst32), float64 \(worst64)")
    }
}
