/// Softmax attention on float16 / bfloat16 tensors: the convert-to-float32 path
/// (docs/HALF_PRECISION.md). The half tensors are validated exactly as float32 tensors are
/// (same checks, same messages), then `HalfPrecisionStaging.run` widens q, k, v (and out,
/// dout) into float32 scratch, the float32 call runs, and each output is rounded once into its
/// half tensor. The row log-sum-exp is float32 whatever the storage type.
extension SoftmaxAttention {
    /// `forward` for half-precision storage: out in H, lse (when given) in float32.
    public static func forward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
        output: MutableTensorView<H>, logSumExp: MutableTensorView<Float>? = nil,
        options: SoftmaxAttentionOptions = SoftmaxAttentionOptions()
    ) throws(PerformerError) {
        try checkForward(query: query, key: key, value: value, output: output, logSumExp: logSumExp,
                         options: options)
        try HalfPrecisionStaging.run(inputs: [query, key, value], outputs: [output], named: "q, k, v, out") { x, y throws(PerformerError) in
            try forward(query: x[0], key: x[1], value: x[2], output: y[0], logSumExp: logSumExp, options: options)
        }
    }

    /// `backward` for half-precision storage: q, k, v, out, dout and the gradients in H, lse in
    /// float32 (as the half-precision forward writes it). Gradients are summed in float32
    /// across key blocks and heads and rounded once.
    public static func backward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
        output: TensorView<H>, logSumExp: TensorView<Float>, outputGradient: TensorView<H>,
        queryGradient: MutableTensorView<H>, keyGradient: MutableTensorView<H>, valueGradient: MutableTensorView<H>,
        options: SoftmaxAttentionOptions = SoftmaxAttentionOptions()
    ) throws(PerformerError) {
        try checkBackward(query: query, key: key, value: value, output: output, logSumExp: logSumExp,
                          outputGradient: outputGradient, queryGradient: queryGradient, keyGradient: keyGradient,
                          valueGradient: valueGradient, options: options)
        try HalfPrecisionStaging.run(inputs: [query, key, value, output, outputGradient],
                                     outputs: [queryGradient, keyGradient, valueGradient], named: "q, k, v, out, dout, dq, dk, dv") { x, y throws(PerformerError) in
            try backward(query: x[0], key: x[1], value: x[2], output: x[3], logSumExp: logSumExp, outputGradient: x[4],
                         queryGradient: y[0], keyGradient: y[1], valueGradient: y[2], options: options)
        }
    }
}
