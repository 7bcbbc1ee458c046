/// FAVOR+ attention and its feature map on float16 / bfloat16 tensors: the convert-to-float32
/// path (docs/HALF_PRECISION.md). q, k, v, out, dout, x, φ(x) and the gradients of those are
/// in H; the causal state (S̃, z̃, c) and its gradients are float32 tensors whatever the
/// storage type, and the projection is the float32 call's. The half tensors are validated as
/// float32 tensors are (same checks, same messages), then the float32 call runs on float32
/// copies (`HalfPrecisionStaging.run`) and each output is rounded once.
extension FavorAttention {
    /// `forward` for half-precision storage: out in H, states in float32.
    public static func forward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>, projection: FavorProjection,
        output: MutableTensorView<H>, initialState: FavorStateView<Float>? = nil,
        finalState: MutableFavorStateView<Float>? = nil, options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        try forward(query: query, key: key, value: value, projection: projection, output: output,
                    initialState: initialState, finalState: finalState, rowScales: nil, options: options)
    }

    /// `forward(rowScales:)` for half-precision storage: out in H, states and row scales in float32.
    public static func forward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>, projection: FavorProjection,
        output: MutableTensorView<H>, initialState: FavorStateView<Float>? = nil,
        finalState: MutableFavorStateView<Float>? = nil, rowScales: FavorRowScalesView<Float>?,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        try checkForward(query: query, key: key, value: value, projection: projection, output: output,
                         initialState: initialState, finalState: finalState, rowScales: rowScales, options: options)
        try HalfPrecisionStaging.run(inputs: [query, key, value], outputs: [output], named: "q, k, v, out") { x, y throws(PerformerError) in
            try forward(query: x[0], key: x[1], value: x[2], projection: projection, output: y[0],
                        initialState: initialState, finalState: finalState, rowScales: rowScales, options: options)
        }
    }

    /// `backward` for half-precision storage: dq, dk, dv in H (summed in float32, rounded once);
    /// states and state gradients in float32.
    public static func backward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>, projection: FavorProjection,
        outputGradient: TensorView<H>,
        queryGradient: MutableTensorView<H>, keyGradient: MutableTensorView<H>, valueGradient: MutableTensorView<H>,
        initialState: FavorStateView<Float>? = nil, finalStateGradient: LinearStateView<Float>? = nil,
        initialStateGradient: MutableLinearStateView<Float>? = nil,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        try checkBackward(query: query, key: key, value: value, projection: projection,
                          outputGradient: outputGradient, queryGradient: queryGradient,
                          keyGradient: keyGradient, valueGradient: valueGradient, initialState: initialState,
                          finalStateGradient: finalStateGradient,
                          initialStateGradient: initialStateGradient, options: options)
        try HalfPrecisionStaging.run(inputs: [query, key, value, outputGradient],
                                     outputs: [queryGradient, keyGradient, valueGradient], named: "q, k, v, dout, dq, dk, dv") { x, y throws(PerformerError) in
            try backward(query: x[0], key: x[1], value: x[2], projection: projection, outputGradient: x[3],
                         queryGradient: y[0], keyGradient: y[1], valueGradient: y[2], initialState: initialState,
                         finalStateGradient: finalStateGradient, initialStateGradient: initialStateGradient,
                         options: options)
        }
    }
}

extension FavorAttention {
    /// `state` for half-precision keys and values: the state triple (and the initial one) in
    /// float32.
    public static func state<H: HalfPrecisionScalar>(
        key: TensorView<H>, value: TensorView<H>, projection: FavorProjection,
        initialState: FavorStateView<Float>? = nil, finalState: MutableFavorStateView<Float>,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        try checkState(key: key, value: value, projection: projection, initialState: initialState,
                       finalState: finalState, options: options)
        try HalfPrecisionStaging.run(inputs: [key, value], outputs: [], named: "k, v") { x, _ throws(PerformerError) in
            try state(key: x[0], value: x[1], projection: projection, initialState: initialState, finalState: finalState,
                      options: options)
        }
    }

    /// `stateBackward` for half-precision keys and values: dk, dv in H; the state, its
    /// gradients in float32.
    public static func stateBackward<H: HalfPrecisionScalar>(
        key: TensorView<H>, value: TensorView<H>, projection: FavorProjection,
        finalStateGradient: LinearStateView<Float>,
        keyGradient: MutableTensorView<H>, valueGradient: MutableTensorView<H>,
        initialState: FavorStateView<Float>? = nil, initialStateGradient: MutableLinearStateView<Float>? = nil,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        try checkStateBackward(key: key, value: value, projection: projection,
                               finalStateGradient: finalStateGradient, keyGradient: keyGradient,
                               valueGradient: valueGradient, initialState: initialState,
                               initialStateGradient: initialStateGradient, options: options)
        try HalfPrecisionStaging.run(inputs: [key, value], outputs: [keyGradient, valueGradient], named: "k, v, dk, dv") { x, y throws(PerformerError) in
            try stateBackward(key: x[0], value: x[1], projection: projection, finalStateGradient: finalStateGradient,
                              keyGradient: y[0], valueGradient: y[1], initialState: initialState,
                              initialStateGradient: initialStateGradient, options: options)
        }
    }
}

extension FavorFeatures {
    /// `forward` for half-precision storage: φ(x) computed in float32 and rounded once to H
    /// (a feature past H's range becomes +inf, as it does past float32's in a float32 call).
    public static func forward<H: HalfPrecisionScalar>(
        input: TensorView<H>, projection: FavorProjection, output: MutableTensorView<H>,
        options: FavorFeatureOptions = FavorFeatureOptions()
    ) throws(PerformerError) {
        guard try checkForward(input: input, projection: projection, output: output, options: options) != nil
        else { return }
        try HalfPrecisionStaging.run(inputs: [input], outputs: [output], named: "x, out") { x, y throws(PerformerError) in
            try forward(input: x[0], projection: projection, output: y[0], options: options)
        }
    }

    /// `backward` for half-precision storage: dx in H.
    public static func backward<H: HalfPrecisionScalar>(
        input: TensorView<H>, featureGradient: TensorView<H>, projection: FavorProjection,
        inputGradient: MutableTensorView<H>, options: FavorFeatureOptions = FavorFeatureOptions()
    ) throws(PerformerError) {
        guard try checkBackward(input: input, featureGradient: featureGradient, projection: projection,
                                inputGradient: inputGradient, options: options) != nil
        else { return }
        try HalfPrecisionStaging.run(inputs: [input, featureGradient], outputs: [inputGradient], named: "x, dfeatures, dx") { x, y throws(PerformerError) in
            try backward(input: x[0], featureGradient: x[1], projection: projection, inputGradient: y[0], options: options)
        }
    }
}
