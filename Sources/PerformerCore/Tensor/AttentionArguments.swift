/// The checks of the main tensors that every attention call repeats once its problem has
/// checked q, k, v against each other: the outputs' shapes, then the footprints that
/// `TensorFootprint.checkOutputsDisjoint` compares (q, k, v first; a call appends its others).
enum AttentionArguments {
    /// Checks out against `outputShape` (B×H×N×M); returns the footprints of q, k, v, out.
    static func forward<T>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: MutableTensorView<T>,
        outputShape: SIMD4<Int>
    ) throws(PerformerError) -> [TensorFootprint] {
        try ShapeCheck.expectShape(output.readOnly, outputShape, name: "out", meaning: "B×H×N×M")
        return [
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(output, name: "out"),
        ]
    }

    /// Checks dout against `outputShape` (B×H×N×M) and dq, dk, dv against q, k, v; returns the
    /// footprints of q, k, v, dout, dq, dk, dv.
    static func backward<T>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        outputShape: SIMD4<Int>
    ) throws(PerformerError) -> [TensorFootprint] {
        try checkGradientShapes(query: query, key: key, value: value, outputGradient: outputGradient,
                                queryGradient: queryGradient, keyGradient: keyGradient, valueGradient: valueGradient,
                                outputShape: outputShape)
        return [
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(outputGradient, name: "dout"),
            try TensorFootprint(queryGradient, name: "dq"), try TensorFootprint(keyGradient, name: "dk"),
            try TensorFootprint(valueGradient, name: "dv"),
        ]
    }

    /// `backward` for a call that also reads the forward's out (B×H×N×M) and row statistic
    /// `logSumExp` (`logSumExpShape`; its element type L may differ from T, as a half call's
    /// float32 lse does): checks out, lse, then as `backward`; returns the footprints of q, k, v,
    /// out, lse, dout, dq, dk, dv.
    static func backward<T, L>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: TensorView<T>,
        logSumExp: TensorView<L>, outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        outputShape: SIMD4<Int>, logSumExpShape: SIMD4<Int>
    ) throws(PerformerError) -> [TensorFootprint] {
        try ShapeCheck.expectShape(output, outputShape, name: "out", meaning: "B×H×N×M")
        try ShapeCheck.expectShape(logSumExp, logSumExpShape, name: "lse", meaning: "B×H×N×1")
        try checkGradientShapes(query: query, key: key, value: value, outputGradient: outputGradient,
                                queryGradient: queryGradient, keyGradient: keyGradient, valueGradient: valueGradient,
                                outputShape: outputShape)
        return [
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(output, name: "out"),
            try TensorFootprint(logSumExp, name: "lse"), try TensorFootprint(outputGradient, name: "dout"),
            try TensorFootprint(queryGradient, name: "dq"), try TensorFootprint(keyGradient, name: "dk"),
            try TensorFootprint(valueGradient, name: "dv"),
        ]
    }

    /// dout against `outputShape` (B×H×N×M), then dq, dk, dv against q, k, v.
    private static func checkGradientShapes<T>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        outputShape: SIMD4<Int>
    ) throws(PerformerError) {
        try ShapeCheck.expectShape(outputGradient, outputShape, name: "dout", meaning: "B×H×N×M")
        try ShapeCheck.expectShape(queryGradient.readOnly, query.shape, name: "dq", meaning: "q.shape")
        try ShapeCheck.expectShape(keyGradient.readOnly, key.shape, name: "dk", meaning: "k.shape")
        try ShapeCheck.expectShape(valueGradient.readOnly, value.shape, name: "dv", meaning: "v.shape")
    }
}
