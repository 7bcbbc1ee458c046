// Double's vector operations for this module's ISA (DoubleVector, see VectorTypes.swift).

extension Double: KernelScalar {
    @usableFromInline typealias Vector = DoubleVector
    @inline(__always) @usableFromInline static var lanes: Int { DoubleVector.scalarCount }
    @inline(__always) @usableFromInline static func load(_ p: UnsafePointer<Double>) -> DoubleVector {
        UnsafeRawPointer(p).loadUnaligned(as: DoubleVector.self)
    }
    @inline(__always) @usableFromInline static func store(_ v: DoubleVector, _ p: UnsafeMutablePointer<Double>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: DoubleVector.self)
    }
    @inline(__always) @usableFromInline static func splat(_ x: Double) -> DoubleVector { DoubleVector(repeating: x) }
    @inline(__always) @usableFromInline static func fma(_ a: DoubleVector, _ b: DoubleVector, _ c: DoubleVector) -> DoubleVector {
        #if PERFORMER_ISA_AVX512 || PERFORMER_ISA_AVX2
        c.addingProduct(a, b)
        #else
        a * b + c
        #endif
    }
    @inline(__always) @usableFromInline static func add(_ a: DoubleVector, _ b: DoubleVector) -> DoubleVector { a + b }
    @inline(__always) @usableFromInline static func sub(_ a: DoubleVector, _ b: DoubleVector) -> DoubleVector { a - b }
    @inline(__always) @usableFromInline static func mul(_ a: DoubleVector, _ b: DoubleVector) -> DoubleVector { a * b }
    @inline(__always) @usableFromInline static func max(_ a: DoubleVector, _ b: DoubleVector) -> DoubleVector {
        a.replacing(with: b, where: a .< b)
    }
    @inline(__always) @usableFromInline static func selectLess(
        _ x: DoubleVector, _ y: DoubleVector, _ a: DoubleVector, _ b: DoubleVector
    ) -> DoubleVector {
        b.replacing(with: a, where: x .< y)
    }
    @_transparent @usableFromInline static func exp2(_ x: DoubleVector) -> DoubleVector { vectorExp2(x) }
    @_transparent @usableFromInline static func exp2NonPositive(_ x: DoubleVector) -> DoubleVector { vectorExp2(x) }
    // Halving like sumHalving (the stdlib's max() is a compare-and-branch loop over the lanes).
    @inline(__always) @usableFromInline static func maxAcross(_ v: DoubleVector) -> Double {
        #if PERFORMER_ISA_AVX512
        let four = v.lowHalf.replacing(with: v.highHalf, where: v.lowHalf .< v.highHalf)
        let two = four.lowHalf.replacing(with: four.highHalf, where: four.lowHalf .< four.highHalf)
        #elseif PERFORMER_ISA_AVX2
        let two = v.lowHalf.replacing(with: v.highHalf, where: v.lowHalf .< v.highHalf)
        #else
        let two = v
        #endif
        return Swift.max(two[0], two[1])
    }
    @inline(__always) @usableFromInline static func sumAcross(_ v: DoubleVector) -> Double { v.sum() }
    @inline(__always) @usableFromInline static func sumHalving(_ v: DoubleVector) -> Double {
        #if PERFORMER_ISA_AVX512
        let four = v.lowHalf + v.highHalf
        let two = four.lowHalf + four.highHalf
        #elseif PERFORMER_ISA_AVX2
        let two = v.lowHalf + v.highHalf
        #else
        let two = v
        #endif
        return two[0] + two[1]
    }
    @usableFromInline typealias SweepVector = DoubleSweepVector
    @inline(__always) @usableFromInline static var log2e: Double { 1.4426950408889634 }
    @inline(__always) @usableFromInline static var ln2: Double { 0.6931471805599453 }
}
