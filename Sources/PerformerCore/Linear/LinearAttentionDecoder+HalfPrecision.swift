/// The linear-attention decoder with float16 / bfloat16 tokens (docs/HALF_PRECISION.md): the
/// decoder is a float32 one (S, z float32 whatever the token type), q, k, v, out are in H.
/// Each call validates the half tokens with the float32 call's checks (same order, same
/// messages), widens them exactly to float32, runs the float32 call and rounds each output
/// once: a half call's outputs are the float32 call's on the widened tokens, rounded, and its
/// state is the float32 call's bit for bit. On error nothing is written and the state is
/// unchanged.
extension LinearAttentionDecoder where Element == Float {
    /// `step` with half-precision tokens. The float32 copies of the tokens are kept by the
    /// decoder: after the first half step, a step allocates nothing.
    public func step<H: HalfPrecisionScalar>(query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
                                             output: MutableTensorView<H>) throws(PerformerError) {
        try checkTokens(query: query, key: key, value: value, output: output)
        try checkStepMemory(query: query, key: key, value: value, output: output)
        let wide = try stagedTokens(query, key, value, output)
        try step(query: wide[0].readOnly, key: wide[1].readOnly, value: wide[2].readOnly, output: wide[3])
        HalfConversion.narrow(wide[3].readOnly, into: output)
    }

    /// `step(query:key:value:output:state:)` with half-precision tokens and a float32 state the
    /// caller owns (read and updated in place, as by the float32 call).
    public func step<H: HalfPrecisionScalar>(query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
                                             output: MutableTensorView<H>,
                                             state: MutableLinearStateView<Float>) throws(PerformerError) {
        try checkTokens(query: query, key: key, value: value, output: output)
        try ShapeCheck.expectShape(state.s.readOnly, stateShape, name: "S", meaning: "B×H×C×M")
        try ShapeCheck.expectShape(state.z.readOnly, normalizerShape, name: "z", meaning: "B×H×C×1")
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(output, name: "out"),
            try TensorFootprint(state.s, name: "S"), try TensorFootprint(state.z, name: "z"),
        ])
        let wide = try stagedTokens(query, key, value, output)
        try step(query: wide[0].readOnly, key: wide[1].readOnly, value: wide[2].readOnly, output: wide[3], state: state)
        HalfConversion.narrow(wide[3].readOnly, into: output)
    }

    /// `prefill` with half-precision tokens: the causal forward in float32 on the widened
    /// prompt (copies allocated for the call), outputs rounded once, the final state float32.
    public func prefill<H: HalfPrecisionScalar>(query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
                                                output: MutableTensorView<H>) throws(PerformerError) {
        _ = try prefillProblem(query: query, key: key, value: value, output: output)
        try HalfPrecisionStaging.run(inputs: [query, key, value], outputs: [output], named: "q, k, v, out") { x, y throws(PerformerError) in
            try prefill(query: x[0], key: x[1], value: x[2], output: y[0])
        }
    }

    /// q, k, v widened into the decoder's kept float32 copies, and room for out.
    private func stagedTokens<H: HalfPrecisionScalar>(
        _ query: TensorView<H>, _ key: TensorView<H>, _ value: TensorView<H>, _ output: MutableTensorView<H>
    ) throws(PerformerError) -> [MutableTensorView<Float>] {
        let wide = try halfTokens.views([query.shape, key.shape, value.shape, output.shape])
        for (source, target) in zip([query, key, value], wide) { HalfConversion.widen(source, into: target) }
        return wide
    }
}
