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

// The vector of a read-modify-write sweep over memory (load, FMA, store the same addresses,
// as the decoder step's pass over its state): at most 256 bits. On AVX-512 (Zen 4) such a sweep
// in zmm ran ~1.35x slower than the same sweep in ymm (benchmarks/results/overhead.md, session 11).
#if PERFORMER_ISA_AVX512 || PERFORMER_ISA_AVX2
@usableFromInline typealias FloatSweepVector = SIMD8<Float>
@usableFromInline typealias DoubleSweepVector = SIMD4<Double>
#else
@usableFromInline typealias FloatSweepVector = SIMD4<Float>
@usableFromInline typealias DoubleSweepVector = SIMD2<Double>
#endif

#if PERFORMER_ISA_AVX512 || PERFORMER_ISA_AVX2
/// The ISA has a fused multiply-add instruction.
@usableFromInline let hasFusedMultiplyAdd = true
#else
@usableFromInline let hasFusedMultiplyAdd = false
#endif
