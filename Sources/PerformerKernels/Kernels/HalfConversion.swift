// Half-precision storage <-> float32, one vector of FloatVector's width at a time. Float16
// widens and narrows through Swift's SIMD conversions, which lower to F16C's vcvtph2ps /
// vcvtps2ph in the AVX2 and AVX-512 builds (x86-64-v3 and v4 include F16C) and to the
// compiler's exact software conversions in the portable build. bfloat16 is the top half of a
// float32: widening is a 16-bit shift, narrowing rounds to nearest even with integer adds.
import PerformerKernelInterface

#if PERFORMER_ISA_AVX512
@usableFromInline typealias Float16Vector = SIMD16<Float16>
@usableFromInline typealias HalfBitsVector = SIMD16<UInt16>
@usableFromInline typealias WideBitsVector = SIMD16<UInt32>
#elseif PERFORMER_ISA_AVX2
@usableFromInline typealias Float16Vector = SIMD8<Float16>
@usableFromInline typealias HalfBitsVector = SIMD8<UInt16>
@usableFromInline typealias WideBitsVector = SIMD8<UInt32>
#else
@usableFromInline typealias Float16Vector = SIMD4<Float16>
@usableFromInline typealias HalfBitsVector = SIMD4<UInt16>
@usableFromInline typealias WideBitsVector = SIMD4<UInt32>
#endif

func makeHalfConversionKernels() -> HalfConversionKernels {
    HalfConversionKernels(
        widenFloat16: { convertRows($0.pointee, from: Float16.self, to: Float.self, vector: widenFloat16Vector, scalar: { Float($0) }) },
        narrowFloat16: { convertRows($0.pointee, from: Float.self, to: Float16.self, vector: narrowFloat16Vector, scalar: { Float16($0) }) },
        widenBFloat16: { convertRows($0.pointee, from: UInt16.self, to: Float.self, vector: widenBFloat16Vector, scalar: widenBFloat16) },
        narrowBFloat16: { convertRows($0.pointee, from: Float.self, to: UInt16.self, vector: narrowBFloat16Vector, scalar: narrowBFloat16) })
}

/// Converts every row of `task`: whole vectors where both rows are unit-stride, then element
/// by element (the tail, and rows with other strides).
@inline(__always)
private func convertRows<Source, Target>(
    _ task: HalfConversionTask, from _: Source.Type, to _: Target.Type,
    vector: (UnsafeRawPointer, UnsafeMutableRawPointer) -> Void, scalar: (Source) -> Target
) {
    let s = task.source, d = task.destination
    let lanes = FloatVector.scalarCount
    for row in 0..<task.rows {
        let from = UnsafePointer<Source>(s.base.assumingMemoryBound(to: Source.self)) + row * s.rowStride
        let to = d.base.assumingMemoryBound(to: Target.self) + row * d.rowStride
        var c = 0
        if s.columnStride == 1 && d.columnStride == 1 {
            while c + lanes <= task.columns {
                vector(UnsafeRawPointer(from + c), UnsafeMutableRawPointer(to + c))
                c += lanes
            }
        }
        while c < task.columns {
            to[c * d.columnStride] = scalar(from[c * s.columnStride])
            c += 1
        }
    }
}

@inline(__always)
private func widenFloat16Vector(_ from: UnsafeRawPointer, _ to: UnsafeMutableRawPointer) {
    to.storeBytes(of: FloatVector(from.loadUnaligned(as: Float16Vector.self)), as: FloatVector.self)
}

/// Rounds to nearest even (vcvtps2ph with the default rounding mode; IEEE in software).
@inline(__always)
private func narrowFloat16Vector(_ from: UnsafeRawPointer, _ to: UnsafeMutableRawPointer) {
    to.storeBytes(of: Float16Vector(from.loadUnaligned(as: FloatVector.self)), as: Float16Vector.self)
}

@inline(__always)
private func widenBFloat16Vector(_ from: UnsafeRawPointer, _ to: UnsafeMutableRawPointer) {
    let bits = WideBitsVector(truncatingIfNeeded: from.loadUnaligned(as: HalfBitsVector.self)) &<< 16
    to.storeBytes(of: unsafeBitCast(bits, to: FloatVector.self), as: FloatVector.self)
}

/// Round to nearest even: add 0x7FFF plus the lowest kept bit, keep the top half. Finite
/// values past the largest bfloat16 carry into the exponent and become infinity, as IEEE
/// rounding does. A NaN would carry into infinity instead: it keeps its top bits and is made
/// quiet (0x40), so it stays a NaN with its sign.
@inline(__always)
private func narrowBFloat16Vector(_ from: UnsafeRawPointer, _ to: UnsafeMutableRawPointer) {
    let value = from.loadUnaligned(as: FloatVector.self)
    let bits = unsafeBitCast(value, to: WideBitsVector.self)
    let rounded = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
    let result = rounded.replacing(with: (bits &>> 16) | 0x40, where: value .!= value)
    to.storeBytes(of: HalfBitsVector(truncatingIfNeeded: result), as: HalfBitsVector.self)
}

@inline(__always)
private func widenBFloat16(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

@inline(__always)
private func narrowBFloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 }
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
}
