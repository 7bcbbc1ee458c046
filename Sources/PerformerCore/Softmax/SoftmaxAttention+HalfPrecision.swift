/// Softmax attention on float16 / bfloat16 tensors: the convert-to-float32 path
/// (docs/HALF_PRECISION.md). The half tensors are validated exactly as float32 tensors are
/// (same checks, same messages), then q, k, v (and out, dout) are widened into float32 scratch,
/// the float32 kernels run, and each output is rounded once into its half tensor. The row
/// log-sum-exp is float32 whatever the storage type.
extension SoftmaxAttention {
    /// `forward` for half-precision storage: out in H, lse (when given) in float32.
    public static func forward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>,
        output: MutableTensorView<H>, logSumExp: MutableTensorView<Float>? = nil,
        options: SoftmaxAttentionOptions = SoftmaxAttentionOptions()
    ) throws(PerformerError) {
        let problem = try SoftmaxProblem(query: query, key: key, value: value, options: options)
        var footprints = try AttentionArguments.forward(query: query, key: key, value: value, output: output,
                                                        outputShape: problem.outputShape)
        if let logSumExp {
            try ShapeCheck.expectShape(logSumExp.readOnly, problem.logSumExpShape, name: "lse", meaning: "B×H×N×1")
            footprints.append(try TensorFootprint(logSumExp, name: "lse"))
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)

        let staging = try HalfPrecisionStaging(shapes: [query.shape, key.shape, value.shape, problem.outputShape])
        let (q, k, v, out) = (staging.tensor(0), staging.tensor(1), staging.tensor(2), staging.tensor(3))
        HalfConversion.widen(query, into: q)
        HalfConversion.widen(key, into: k)
        HalfConversion.widen(value, into: v)
        try forward(query: q.readOnly, key: k.readOnly, value: v.readOnly, output: out, logSumExp: logSumExp,
                    options: options)
        HalfConversion.narrow(out.readOnly, into: output)
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
        let problem = try SoftmaxProblem(query: query, key: key, value: value, options: options)
        try ShapeCheck.expectShape(output, problem.outputShape, name: "out", meaning: "B×H×N×M")
        try ShapeCheck.expectShape(logSumExp, problem.logSumExpShape, name: "lse", meaning: "B×H×N×1")
        try ShapeCheck.expectShape(outputGradient, problem.outputShape, name: "dout", meaning: "B×H×N×M")
        try ShapeCheck.expectShape(queryGradient.readOnly, query.shape, name: "dq", meaning: "q.shape")
        try ShapeCheck.expectShape(keyGradient.readOnly, key.shape, name: "dk", meaning: "k.shape")
        try ShapeCheck.expectShape(valueGradient.readOnly, value.shape, name: "dv", meaning: "v.shape")
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(output, name: "out"),
            try TensorFootprint(logSumExp, name: "lse"), try TensorFootprint(outputGradient, name: "dout"),
            try TensorFootprint(queryGradient, name: "dq"), try TensorFootprint(keyGradient, name: "dk"),
            try TensorFootprint(valueGradient, name: "dv"),
        ])

        let staging = try HalfPrecisionStaging(shapes: [
            query.shape, key.shape, value.shape, output.shape, outputGradient.shape,
            query.shape, key.shape, value.shape,
        ])
        let (q, k, v, out, dout) = (staging.tensor(0), staging.tensor(1), staging.tensor(2), staging.tensor(3), staging.tensor(4))
        let (dq, dk, dv) = (staging.tensor(5), staging.tensor(6), staging.tensor(7))
        for (source, target) in [(query, q), (key, k), (value, v), (output, out), (outputGradient, dout)] {
            HalfConversion.widen(source, into: target)
        }
        try backward(query: q.readOnly, key: k.readOnly, value: v.readOnly, output: out.readOnly,
                     logSumExp: logSumExp, outputGradient: dout.readOnly, queryGradient: dq, keyGradient: dk,
                     valueGradient: dv, options: options)
        HalfConversion.narrow(dq.readOnly, into: queryGradient)
        HalfConversion.narrow(dk.readOnly, into: keyGradient)
        HalfConversion.narrow(dv.readOnly, into: valueGradient)
    }
}
