// The table of compute routines one kernel module provides. PerformerCore picks one table at
// first use (by CPU features, or PERFORMER_ISA) and calls only through it, so no instruction
// the CPU lacks ever runs.

/// The instruction set a kernel module was compiled for.
public enum KernelISA: String, CaseIterable, Sendable {
    /// Baseline x86-64 (or any CPU): always available, slow.
    case portable
    /// x86-64-v3: AVX2 + FMA.
    case avx2
    /// x86-64-v4: AVX-512 F/CD/BW/DQ/VL.
    case avx512
}

/// Every routine one kernel module provides, grouped by algorithm family.
public struct KernelSet: Sendable {
    public var isa: KernelISA
    public var softmax: SoftmaxKernels
    public var softmaxRows: SoftmaxRowKernels
    public var softmaxBackward: SoftmaxBackwardKernels
    public var randomFeatures: RandomFeatureKernels
    public var favorStep: FavorStepKernels
    public var linear: LinearKernels
    public var favorAttention: FavorAttentionKernels
    public var halfConversion: HalfConversionKernels

    public init(isa: KernelISA, softmax: SoftmaxKernels, softmaxRows: SoftmaxRowKernels,
                softmaxBackward: SoftmaxBackwardKernels, randomFeatures: RandomFeatureKernels,
                favorStep: FavorStepKernels, linear: LinearKernels, favorAttention: FavorAttentionKernels,
                halfConversion: HalfConversionKernels) {
        self.isa = isa
        self.softmax = softmax
        self.softmaxRows = softmaxRows
        self.softmaxBackward = softmaxBackward
        self.randomFeatures = randomFeatures
        self.favorStep = favorStep
        self.linear = linear
        self.favorAttention = favorAttention
        self.halfConversion = halfConversion
    }
}
