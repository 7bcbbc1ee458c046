import PerformerKernelInterface

#if PERFORMER_ISA_AVX512
let moduleISA = KernelISA.avx512
#elseif PERFORMER_ISA_AVX2
let moduleISA = KernelISA.avx2
#else
let moduleISA = KernelISA.portable
#endif

/// The table of this module's routines. Calling it is safe on any CPU; calling its entries
/// is safe only where `isa` is supported (PerformerCore checks before choosing it).
public func makeKernelSet() -> KernelSet {
    KernelSet(isa: moduleISA, softmax: makeSoftmaxKernels(), softmaxRows: makeSoftmaxRowKernels(),
              softmaxBackward: makeSoftmaxBackwardKernels(),
              randomFeatures: makeRandomFeatureKernels(), favorStep: makeFavorStepKernels(),
              linear: makeLinearKernels(),
              favorAttention: makeFavorAttentionKernels(),
              halfConversion: makeHalfConversionKernels())
}
