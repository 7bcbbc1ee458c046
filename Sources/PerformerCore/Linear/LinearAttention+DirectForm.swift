import PerformerKernelInterface

/// The direct form of small forwards (o_i = Σ_j (φ(q_i)·φ(k_j)) v_j / (Σ_j φ(q_i)·φ(k_j) + ε),
/// no C × M state): which calls take it. The choice depends on the head shape and on whether a
/// state is read or written, never on the thread count, so a call gives the same bits however
/// it is split.
extension LinearAttention {
    /// Tests set it to false to run every forward through the chunked kernel (to compare forms).
    nonisolated(unsafe) package static var directFormEnabled = true

    /// Whether a forward of this head shape without an initial or final state runs the direct form.
    package static func runsDirectForm(queryCount: Int, keyCount: Int, headDim: Int, valueDim: Int, causal: Bool) -> Bool {
        let shape = LinearHeadShape(queryCount: queryCount, keyCount: keyCount, headDim: headDim, valueDim: valueDim,
                                    featureDim: headDim)
        return directFormEnabled && linearDirectFormFits(shape, causal: causal)
    }

    /// The direct form for `problem`'s tasks: no state argument and a fitting shape.
    static func runsDirectForm(_ problem: LinearProblem, hasState: Bool) -> Bool {
        !hasState && directFormEnabled && linearDirectFormFits(problem.shape, causal: problem.options.causal)
    }
}
