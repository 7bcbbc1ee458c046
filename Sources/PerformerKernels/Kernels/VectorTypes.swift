// The native vector of each scalar in this module's ISA (see KernelScalar.swift).

#if PERFORMER_ISA_AVX512
@usableFromInline typealias FloatVector = SIMD16<Float>
@usableFromInline typealias FloatBits = SIMD16<Int32>
@usableFromInline typealias DoubleVector = SIMD8<Double>
@usableFromInline typealias DoubleBits = SIMD8<Int64>
#elseif PERFORMER_ISA_AVX2
@usableFromInline typealias FloatVector = SIMD8<Float>
@usableFromInline typealias FloatBits = SIMD8<Int32>
@usableFromInline typealias DoubleVector = SIMD4<Double>
@usableFromInline typealias DoubleBits = SIMD4<Int64>
#else
@usableFromInline typealias FloatVector = SIMD4<Float>
@usableFromInline typealias FloatBits = SIMD4<Int32>
@usableFromInline typealias DoubleVector = SIMD2<Double>
@usableFromInline typealias DoubleBits = SIMD2<Int64>
#endif

#if PERFORMER_ISA_AVX512 || PERFORMER_ISA_AVX2
/// The ISA has a fused multiply-add instruction.
@usableFromInline let hasFusedMultiplyAdd = true
#else
@usableFromInline let hasFusedMultiplyAdd = false
#endif
