// Float's vector operations for this module's ISA (FloatVector, see VectorTypes.swift).

extension Float: KernelScalar {
    @usableFromInline typealias Vector = FloatVector
    @inline(__always) @usableFromInline static var lanes: Int { FloatVector.scalarCount }
    @inline(__always) @usableFromInline static func load(_ p: UnsafePointer<Float>) -> FloatVector {
        UnsafeRawPointer(p).loadUnaligned(as: FloatVector.self)
    }
    @inline(__always) @usableFromInline static func store(_ v: FloatVector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: FloatVector.self)
    }
    @inline(__always) @usableFromInline static func splat(_ x: Float) -> FloatVector { FloatVector(repeating: x) }
    @inline(__always) @usableFromInline static func fma(_ a: FloatVector, _ b: FloatVector, _ c: FloatVector) -> FloatVector {
        #if PERFORMER_ISA_AVX512 || PERFORMER_ISA_AVX2
        c.addingProduct(a, b)
        #else
        a * b + c
        #endif
    }
    @inline(__always) @usableFromInline static func add(_ a: FloatVector, _ b: FloatVector) -> FloatVector { a + b }
    @inline(__always) @usableFromInline static func sub(_ a: FloatVector, _ b: FloatVector) -> FloatVector { a - b }
    @inline(__always) @usableFromInline static func mul(_ a: FloatVector, _ b: FloatVector) -> FloatVector { a * b }
    @inline(__always) @usableFromInline static func max(_ a: FloatVector, _ b: FloatVector) -> FloatVector {
        a.replacing(with: b, where: a .< b)
    }
    @inline(__always) @usableFromInline static func selectLess(
        _ x: FloatVector, _ y: FloatVector, _ a: FloatVector, _ b: FloatVector
    ) -> FloatVector {
        b.replacing(with: a, where: x .< y)
    }
    @_transparent @usableFromInline static func exp2(_ x: FloatVector) -> FloatVector { vectorExp2(x) }
    @_transparent @usableFromInline static func exp2NonPositive(_ x: FloatVector) -> FloatVector {
        vectorExp2NonPositive(x)
    }
    // Halving like sumHalving (the stdlib's max() is a compare-and-branch loop over the lanes).
    @inline(__always) @usableFromInline static func maxAcross(_ v: FloatVector) -> Float {
        #if PERFORMER_ISA_AVX512
        let eight = v.lowHalf.replacing(with: v.highHalf, where: v.lowHalf .< v.highHalf)
        let four = eight.lowHalf.replacing(with: eight.highHalf, where: eight.lowHalf .< eight.highHalf)
        #elseif PERFORMER_ISA_AVX2
        let four = v.lowHalf.replacing(with: v.highHalf, where: v.lowHalf .< v.highHalf)
        #else
        let four = v
        #endif
        let two = four.lowHalf.replacing(with: four.highHalf, where: four.lowHalf .< four.highHalf)
        return Swift.max(two[0], two[1])
    }
    @inline(__always) @usableFromInline static func sumAcross(_ v: FloatVector) -> Float { v.sum() }
    @inline(__always) @usableFromInline static func sumHalving(_ v: FloatVector) -> Float {
        #if PERFORMER_ISA_AVX512
        let eight = v.lowHalf + v.highHalf
        let four = eight.lowHalf + eight.highHalf
        #elseif PERFORMER_ISA_AVX2
        let four = v.lowHalf + v.highHalf
        #else
        let four = v
        #endif
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }
    @usableFromInline typealias SweepVector = FloatSweepVector
    @inline(__always) @usableFromInline static var log2e: Float { 1.442695040888963 }
    @inline(__always) @usableFromInline static var ln2: Float { 0.6931471805599453 }
}
