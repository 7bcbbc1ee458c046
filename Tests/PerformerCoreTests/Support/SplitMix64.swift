import Foundation

/// A small deterministic generator for test data: splitmix64 for the bits, Box–Muller for
/// normal deviates. The same seed gives the same sequence on every platform, so a failing
/// case can be reproduced from the seed printed with it.
struct SplitMix64 {
    private(set) var state: UInt64
    /// The second deviate of the last Box–Muller pair, not yet returned.
    private var spareNormal: Double?

    init(seed: UInt64) {
        state = seed
    }

    mutating func nextUInt64() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1): the top 53 bits, offset by half a step.
    mutating func nextUniform() -> Double {
        (Double(nextUInt64() >> 11) + 0.5) * 0x1p-53
    }

    /// Uniform in `range` (closed-open).
    mutating func nextUniform(in range: Range<Double>) -> Double {
        range.lowerBound + (range.upperBound - range.lowerBound) * nextUniform()
    }

    /// Uniform integer in `range`.
    mutating func nextInt(in range: ClosedRange<Int>) -> Int {
        let width = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound + Int(nextUInt64() % width)
    }

    /// A standard normal deviate (Box–Muller; both deviates of a pair are used).
    mutating func nextNormal() -> Double {
        if let spare = spareNormal {
            spareNormal = nil
            return spare
        }
        let radius = (-2 * Foundation.log(nextUniform())).squareRoot()
        let angle = 2 * Double.pi * nextUniform()
        spareNormal = radius * Foundation.sin(angle)
        return radius * Foundation.cos(angle)
    }
}
