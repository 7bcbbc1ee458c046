/// The FAVOR+ decoder with float16 / bfloat16 tokens (docs/HALF_PRECISION.md): the decoder is
/// a float32 one (S̃, z̃, c float32 whatever the token type), q, k, v, out are in H. A step
/// validates the half tokens with the float32 step's checks (same order, same messages),
/// widens them exactly into float32 copies the decoder keeps (so a step allocates nothing
/// after the first), runs the float32 step and rounds out once: the float32 step's output on
/// the widened tokens, rounded, and its state bit for bit. On error nothing is written and
/// the state is unchanged.
extension FavorDecoder where T == Float {
    /// `step` with half-precision tokens: q, k (B×H×D), v and out (B×H×M) in H, the state
    /// float32. The float32 copies of the tokens are kept by the decoder: after the first half
    /// step, a step allocates nothing.
    public func step<H: HalfPrecisionScalar>(query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
                                             output: MutableTensorView<H>) throws(PerformerError) {
        guard try checkTokens(query: query, key: key, value: value, output: output) else { return }
        let wide = try halfTokens.views([query.shape, key.shape, value.shape, output.shape])
        for (source, target) in zip([query, key, value], wide) { HalfConversion.widen(source, into: target) }
        try step(query: wide[0].readOnly, key: wide[1].readOnly, value: wide[2].readOnly, output: wide[3])
        HalfConversion.narrow(wide[3].readOnly, into: output)
    }
}
