import PerformerKernelInterface

/// This module's linear-attention entries (ALGORITHMS.md §2), one generic body per element type.
func makeLinearKernels() -> LinearKernels {
    LinearKernels(
        scratchBytes: { shape, elementSize, causal, backward in
            switch (elementSize == 4, backward) {
            case (true, false): linearForwardScratchBytes(shape, causal: causal, Float.self)
            case (false, false): linearForwardScratchBytes(shape, causal: causal, Double.self)
            case (true, true): LinearScratch<Float>.bytes(shape: shape, causal: causal, backward: true)
            case (false, true): LinearScratch<Double>.bytes(shape: shape, causal: causal, backward: true)
            }
        },
        forwardFloat: { linearForward($0, Float.self) },
        forwardDouble: { linearForward($0, Double.self) },
        backwardFloat: { linearBackward($0, Float.self) },
        backwardDouble: { linearBackward($0, Double.self) },
        stepScratchBytes: { featureDim, valueDim, elementSize in
            (linearStepScratchCount(featureDim: featureDim, valueDim: valueDim) * elementSize).value
        },
        stepFloat: { linearStep($0, Float.self) },
        stepDouble: { linearStep($0, Double.self) },
        queryStateGradientFloat: { linearQueryStateGradient($0, Float.self) },
        queryStateGradientDouble: { linearQueryStateGradient($0, Double.self) })
}
