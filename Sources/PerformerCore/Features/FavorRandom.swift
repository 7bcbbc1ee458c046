#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The seeded generator FAVOR+ projections are drawn from (docs/FAVOR.md, "The generator").
///
/// Counter-based: word `i` of stream `(seed, draw, purpose)` is a pure function of those four
/// integers, so any draw can be recomputed in isolation and the result does not depend on
/// threads or call order. The construction is splitmix64 (Steele, Lea, Flood, "Fast
/// splittable pseudorandom number generators", 2014): a Weyl sequence with increment γ,
/// finalized by the 64-bit mixer `mix64`. Everything is 64-bit integer arithmetic (exact on
/// every platform) followed by float64 operations in a fixed order.
public struct FavorRandom: Sendable, Equatable {
    /// The golden-ratio increment of splitmix64.
    public static let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15
    /// Odd constants that separate the `draw` and `purpose` parts of the key.
    static let drawMultiplier: UInt64 = 0xD1B5_4A32_D192_ED03
    static let purposeMultiplier: UInt64 = 0xABC9_8388_FB8F_AC03

    /// The starting state of this stream.
    public let key: UInt64

    /// The stream for `(seed, draw, purpose)`:
    /// `key = mix64(mix64(mix64(seed + γ) ^ (draw · Cd)) ^ (purpose · Cp))` (wrapping arithmetic).
    public init(seed: UInt64, draw: UInt64, purpose: UInt64) {
        let a = Self.mix64(seed &+ Self.gamma)
        let b = Self.mix64(a ^ (draw &* Self.drawMultiplier))
        key = Self.mix64(b ^ (purpose &* Self.purposeMultiplier))
    }

    /// The splitmix64 finalizer (a bijection of UInt64).
    @inlinable
    public static func mix64(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Word `index` (0-based) of the stream: `mix64(key + (index + 1) · γ)`, i.e. the
    /// (index+1)-th output of splitmix64 started from `key`.
    public func word(_ index: UInt64) -> UInt64 {
        Self.mix64(key &+ (index &+ 1) &* Self.gamma)
    }

    /// A uniform double in [0, 1): the top 53 bits of word `index` times 2⁻⁵³.
    public func uniform(_ index: UInt64) -> Double {
        Double(word(index) >> 11) * 0x1p-53
    }

    /// A uniform double in (0, 1]: (top 53 bits + 1) times 2⁻⁵³. Never 0, so its log is finite.
    public func uniformOpenBelow(_ index: UInt64) -> Double {
        Double((word(index) >> 11) + 1) * 0x1p-53
    }

    /// Standard normal number `index` of the stream, by the Box–Muller transform of the word
    /// pair (2p, 2p+1), p = index / 2: u₁ = uniformOpenBelow(2p), u₂ = uniform(2p+1),
    /// r = √(−2 ln u₁), θ = 2π·u₂; even indices take r·cos θ, odd indices r·sin θ.
    public func normal(_ index: UInt64) -> Double {
        let pair = index / 2
        let u1 = uniformOpenBelow(2 &* pair)
        let u2 = uniform(2 &* pair &+ 1)
        let r = (-2.0 * log(u1)).squareRoot()
        let theta = (2.0 * Double.pi) * u2
        return index % 2 == 0 ? r * cos(theta) : r * sin(theta)
    }

    /// Normals `start ..< start + count` in order (each pair's transform is computed once).
    public func normals(from start: UInt64, count: Int) -> [Double] {
        var result = [Double]()
        result.reserveCapacity(count)
        var index = start
        while result.count < count {
            let pair = index / 2
            let u1 = uniformOpenBelow(2 &* pair)
            let u2 = uniform(2 &* pair &+ 1)
            let r = (-2.0 * log(u1)).squareRoot()
            let theta = (2.0 * Double.pi) * u2
            if index % 2 == 0 {
                result.append(r * cos(theta))
                if result.count < count { result.append(r * sin(theta)) }
            } else {
                result.append(r * sin(theta))
            }
            index = (pair &+ 1) &* 2
        }
        return result
    }
}
