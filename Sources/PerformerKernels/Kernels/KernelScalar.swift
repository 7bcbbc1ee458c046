// The element types the dense kernels compute in, with the vector operations they need.
//
// Every kernel is generic over `KernelScalar` and calls only these static requirements, so
// after specialization each call inlines to concrete SIMD code of this module's ISA:
//   AVX-512 build: SIMD16<Float>, SIMD8<Double>  (zmm)
//   AVX2 build:    SIMD8<Float>,  SIMD4<Double>  (ymm, FMA)
//   portable:      SIMD4<Float>,  SIMD2<Double>  (SSE2; multiply + add, no FMA instruction)
// Generic SIMD protocol operators are never used in kernels: they compile to per-lane loops.

/// A scalar the kernels compute in (Float or Double) and its native vector.
@usableFromInline
protocol KernelScalar: BinaryFloatingPoint, SIMDScalar, Codable {
    associatedtype Vector: SIMD where Vector.Scalar == Self
    /// Lanes in `Vector`.
    static var lanes: Int { get }
    /// Loads `lanes` elements from `p` (no alignment needed).
    static func load(_ p: UnsafePointer<Self>) -> Vector
    /// Stores `lanes` elements at `p` (no alignment needed).
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Self>)
    static func splat(_ x: Self) -> Vector
    /// a · b + c (one FMA where the ISA has it).
    static func fma(_ a: Vector, _ b: Vector, _ c: Vector) -> Vector
    static func add(_ a: Vector, _ b: Vector) -> Vector
    static func sub(_ a: Vector, _ b: Vector) -> Vector
    static func mul(_ a: Vector, _ b: Vector) -> Vector
    static func max(_ a: Vector, _ b: Vector) -> Vector
    /// Lanes of `a` where `mask` holds, else lanes of `b`; `mask` is `a .> b`-style lanes of `x < y`.
    static func selectLess(_ x: Vector, _ y: Vector, _ a: Vector, _ b: Vector) -> Vector
    /// 2^x per lane, relative error ≤ a few ulp over the normal range; exactly 0 for x = −inf
    /// and for x < −(exponent bias); +inf above the largest finite power. See VectorExp.swift.
    static func exp2(_ x: Vector) -> Vector
    /// exp2 for x ≤ 127 (softmax probabilities, x ≤ 0): Float drops the upper clamp and uses a
    /// shorter polynomial of no worse accuracy (VectorExp2NonPositive.swift); Double is exp2.
    static func exp2NonPositive(_ x: Vector) -> Vector
    /// Largest lane.
    static func maxAcross(_ v: Vector) -> Self
    /// Sum of the lanes.
    static func sumAcross(_ v: Vector) -> Self
    /// Sum of the lanes by halving (high half added to the low half until one lane is left):
    /// a few shuffles, where `sumAcross` adds the lanes one after another.
    static func sumHalving(_ v: Vector) -> Self
    /// The vector of read-modify-write sweeps over memory (VectorTypes.swift): `Vector`, or
    /// its 256-bit half on AVX-512.
    associatedtype SweepVector: SIMD where SweepVector.Scalar == Self
    /// log2(e), ln 2 in this type.
    static var log2e: Self { get }
    static var ln2: Self { get }
}
