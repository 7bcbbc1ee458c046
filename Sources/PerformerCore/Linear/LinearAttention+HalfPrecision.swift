/// Linear attention on float16 / bfloat16 tensors: the convert-to-float32 path
/// (docs/HALF_PRECISION.md). q, k, v, out, dout and dq, dk, dv are in H; the states (S, z),
/// their gradients and the denominators are float32 tensors whatever the storage type. The
/// half tensors are validated as float32 tensors are (same checks, same messages), then the
/// float32 call runs on float32 copies (`HalfPrecisionStaging.run`) and each output is rounded
/// once.
extension LinearAttention {
    /// `forward` for half-precision storage: out in H; states and denominators in float32.
    public static func forward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>, output: MutableTensorView<H>,
        initialState: LinearStateView<Float>? = nil, finalState: MutableLinearStateView<Float>? = nil,
        denominators: MutableTensorView<Float>? = nil,
        options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        try checkForward(query: query, key: key, value: value, output: output, initialState: initialState,
                         finalState: finalState, denominators: denominators, options: options)
        try HalfPrecisionStaging.run(inputs: [query, key, value], outputs: [output], named: "q, k, v, out") { x, y throws(PerformerError) in
            try forward(query: x[0], key: x[1], value: x[2], output: y[0], initialState: initialState,
                        finalState: finalState, denominators: denominators, options: options)
        }
    }

    /// `backward` for half-precision storage: dq, dk, dv in H (each summed in float32, rounded
    /// once); states and state gradients in float32.
    public static func backward<H: HalfPrecisionScalar>(
        query: TensorView<H>, key: TensorView<H>, value: TensorView<H>, outputGradient: TensorView<H>,
        queryGradient: MutableTensorView<H>, keyGradient: MutableTensorView<H>, valueGradient: MutableTensorView<H>,
        initialState: LinearStateView<Float>? = nil, finalStateGradient: LinearStateView<Float>? = nil,
        initialStateGradient: MutableLinearStateView<Float>? = nil,
        options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        try checkBackward(query: query, key: key, value: value, outputGradient: outputGradient,
                          queryGradient: queryGradient, keyGradient: keyGradient, valueGradient: valueGradient,
                          initialState: initialState, finalStateGradient: finalStateGradient,
                          initialStateGradient: initialStateGradient, options: options)
        try HalfPrecisionStaging.run(inputs: [query, key, value, outputGradient],
                                     outputs: [queryGradient, keyGradient, valueGradient], named: "q, k, v, dout, dq, dk, dv") { x, y throws(PerformerError) in
            try backward(query: x[0], key: x[1], value: x[2], outputGradient: x[3], queryGradient: y[0],
                         keyGradient: y[1], valueGradient: y[2], initialState: initialState,
                         finalStateGradient: finalStateGradient, initialStateGradient: initialStateGradient,
                         options: options)
        }
    }
}

extension LinearAttention {
    /// `state` for half-precision keys and values: the state (and the initial state) in float32.
    public static func state<H: HalfPrecisionScalar>(
        key: TensorView<H>, value: TensorView<H>, initialState: LinearStateView<Float>? = nil,
        finalState: MutableLinearStateView<Float>, options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        try checkState(key: key, value: value, initialState: initialState, finalState: finalState,
                       options: options)
        try HalfPrecisionStaging.run(inputs: [key, value], outputs: [], named: "k, v") { x, _ throws(PerformerError) in
            try state(key: x[0], value: x[1], initialState: initialState, finalState: finalState, options: options)
        }
    }

    /// `stateBackward` for half-precision keys and values: dk, dv in H, the state gradients in
    /// float32.
    public static func stateBackward<H: HalfPrecisionScalar>(
        key: TensorView<H>, value: TensorView<H>, finalStateGradient: LinearStateView<Float>,
        keyGradient: MutableTensorView<H>, valueGradient: MutableTensorView<H>,
        initialStateGradient: MutableLinearStateView<Float>? = nil,
        options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        try checkStateBackward(key: key, value: value, finalStateGradient: finalStateGradient,
                               keyGradient: keyGradient, valueGradient: valueGradient,
                               initialStateGradient: initialStateGradient, options: options)
        try HalfPrecisionStaging.run(inputs: [key, value], outputs: [keyGradient, valueGradient], named: "k, v, dk, dv") { x, y throws(PerformerError) in
            try stateBackward(key: x[0], value: x[1], finalStateGradient: finalStateGradient, keyGradient: y[0],
                              valueGradient: y[1], initialStateGradient: initialStateGradient, options: options)
        }
    }
}

extension LinearAttention {
    /// `initialStateGradient` for half-precision q, out and dout: the denominators and the state
    /// gradient in float32 (summed from the widened rows).
    public static func initialStateGradient<H: HalfPrecisionScalar>(
        query: TensorView<H>, output: TensorView<H>, outputGradient: TensorView<H>, denominators: TensorView<Float>?,
        initialStateGradient: MutableLinearStateView<Float>, options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        try checkInitialStateGradient(query: query, output: output, outputGradient: outputGradient,
                                      denominators: denominators, initialStateGradient: initialStateGradient,
                                      options: options)
        try HalfPrecisionStaging.run(inputs: [query, output, outputGradient], outputs: [], named: "q, out, dout") { x, _ throws(PerformerError) in
            try self.initialStateGradient(query: x[0], output: x[1], outputGradient: x[2], denominators: denominators,
                                          initialStateGradient: initialStateGradient, options: options)
        }
    }
}
