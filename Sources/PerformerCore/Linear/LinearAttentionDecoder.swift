#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

/// Causal linear attention as an RNN (ALGORITHMS.md §2 "Recurrent step"): holds the state
/// S (B×H×C×M) and z (B×H×C) of B × H query heads and takes one token per `step`:
/// S ← S + φ(k) vᵀ, z ← z + φ(k), o = φ(q)ᵀS / (φ(q)ᵀz + ε).
///
/// A step costs O(C · M) per head whatever the position, and allocates nothing: its scratch is
/// allocated with the decoder. Tokens are rank-4 views with the token axis of length 1, as one
/// position of the forward's tensors: q B×H×1×D, k B×Hk×1×D, v B×Hk×1×M, out B×H×1×M (Hk divides
/// H; query head h reads key head h / (H/Hk) and keeps its own state, as in the forward).
///
/// "Prefill, then decode": `prefill` runs the causal forward over a prompt starting from the
/// current state and keeps its final state, or `loadState` takes a forward's final state.
///
/// Not thread-safe: one thread at a time may use a decoder (different decoders are independent).
public final class LinearAttentionDecoder<Element: AttentionScalar> {
    /// B.
    public let batch: Int
    /// H, the query heads: each keeps its own state.
    public let heads: Int
    /// Hk, the key and value heads (Hk divides H).
    public let keyHeads: Int
    /// D, the query and key dimension.
    public let headDim: Int
    /// M, the value and output dimension.
    public let valueDim: Int
    /// C (= headDim for every built-in feature map).
    public let featureDim: Int
    /// φ, applied to every query and key.
    public let featureMap: LinearAttentionOptions.FeatureMap
    /// ε in o = φ(q)ᵀS / (φ(q)ᵀz + ε).
    public let epsilon: Double

    private let state: UnsafeMutablePointer<Element>       // B×H×C×M
    private let normalizer: UnsafeMutablePointer<Element>  // B×H×C
    private let scratch: UnsafeMutableRawPointer
    private let stateCount: Int
    private let normalizerCount: Int
    /// Float32 copies of half-precision tokens (LinearAttentionDecoder+HalfPrecision.swift).
    let halfTokens = DecoderTokenStaging()

    /// The shape of S: B×H×C×M.
    public var stateShape: SIMD4<Int> { SIMD4(batch, heads, featureDim, valueDim) }
    /// The shape of z: B×H×C×1.
    public var normalizerShape: SIMD4<Int> { SIMD4(batch, heads, featureDim, 1) }

    /// A decoder with a zero state. `keyHeads` (default `heads`) must divide `heads`; `epsilon`
    /// must be finite and ≥ 0.
    public init(batch: Int, heads: Int, keyHeads: Int? = nil, headDim: Int, valueDim: Int,
                featureMap: LinearAttentionOptions.FeatureMap = .eluPlusOne, epsilon: Double = 1e-6) throws(PerformerError) {
        let keyHeads = keyHeads ?? heads
        guard batch >= 0, heads >= 0, valueDim >= 0 else {
            throw PerformerError(.invalidArgument, "batch = \(batch), heads = \(heads), value_dim = \(valueDim) must be >= 0")
        }
        guard headDim >= 1 else { throw PerformerError(.invalidArgument, "dim = \(headDim): head dim must be at least 1") }
        guard keyHeads >= 1, heads % keyHeads == 0 else {
            throw PerformerError(.invalidArgument, "heads = \(heads) is not a multiple of key_heads = \(keyHeads)")
        }
        guard epsilon.isFinite, epsilon >= 0 else {
            throw PerformerError(.invalidArgument, "eps = \(epsilon) must be finite and >= 0")
        }
        // The state is no argument: messages name the sizes the caller passed.
        let sizes = "batch = \(batch), heads = \(heads), dim = \(headDim), value_dim = \(valueDim)"
        guard let stateCount = TensorLayout.product(batch, heads, headDim, valueDim),
              let normalizerCount = TensorLayout.product(batch, heads, headDim) else {
            throw PerformerError(.sizeOverflow, "\(sizes): the decoder state (batch × heads × dim × value_dim elements) does not fit in 64 bits")
        }
        // Every size below is checked before it is added or multiplied: a trap would abort the
        // caller's process. (The step's scratch is a few rows of C and M elements; with B·H = 0
        // the state is empty whatever D and M are, so they are bounded on their own.)
        let dimLimit = Int.max / 64
        guard headDim <= dimLimit, valueDim <= dimLimit else {
            throw PerformerError(.sizeOverflow, "dim = \(headDim), value_dim = \(valueDim): the decoder's buffers would not fit in 64 bits")
        }
        let scratchBytes = Runtime.kernels.linear.stepScratchBytes(headDim, valueDim, MemoryLayout<Element>.stride)
        let (elements, countOverflow) = stateCount.addingReportingOverflow(normalizerCount)
        let (stateBytes, bytesOverflow) = elements.multipliedReportingOverflow(by: MemoryLayout<Element>.stride)
        let (padded, paddedOverflow) = max(stateBytes, 1).addingReportingOverflow(64)
        let (totalBytes, totalOverflow) = padded.addingReportingOverflow(scratchBytes)
        guard !countOverflow, !bytesOverflow, !paddedOverflow, !totalOverflow else {
            throw PerformerError(.sizeOverflow, "\(sizes): the decoder state (\(stateCount) + \(normalizerCount) elements) and its scratch do not fit in 64 bits")
        }
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, 64, totalBytes) == 0, let memory else {
            throw PerformerError(.outOfMemory, "\(sizes): could not allocate the decoder state (\(elements) elements)")
        }
        self.batch = batch
        self.heads = heads
        self.keyHeads = keyHeads
        self.headDim = headDim
        self.valueDim = valueDim
        self.featureDim = headDim
        self.featureMap = featureMap
        self.epsilon = epsilon
        self.stateCount = stateCount
        self.normalizerCount = normalizerCount
        self.state = memory.bindMemory(to: Element.self, capacity: stateCount + normalizerCount)
        self.normalizer = state + stateCount
        self.scratch = memory + (max(stateBytes, 1) + 63) / 64 * 64
        reset()
    }

    deinit { free(UnsafeMutableRawPointer(state)) }

    /// Sets S and z to zero (a new sequence).
    public func reset() {
        state.update(repeating: 0, count: stateCount + normalizerCount)
    }

    /// Takes one token per head and writes its output (shapes in the type's description).
    /// On error nothing is written and the state is unchanged.
    public func step(query: TensorView<Element>, key: TensorView<Element>, value: TensorView<Element>,
                     output: MutableTensorView<Element>) throws(PerformerError) {
        try checkTokens(query: query, key: key, value: value, output: output)
        try checkStepMemory(query: query, key: key, value: value, output: output)
        runStep(query: query, key: key, value: value, output: output, state: ownState)
    }

    /// One step on a state the caller owns (S: B×H×C×M, z: B×H×C×1, any strides), read and
    /// updated in place; the decoder's own state is neither read nor changed. The same
    /// arithmetic as `step`, so a caller state and the decoder's own give the same bits. S and
    /// z must not overlap each other or a token, and each must not overlap itself. On error
    /// nothing is written.
    public func step(query: TensorView<Element>, key: TensorView<Element>, value: TensorView<Element>,
                     output: MutableTensorView<Element>, state: MutableLinearStateView<Element>) throws(PerformerError) {
        try checkTokens(query: query, key: key, value: value, output: output)
        try Self.expectToken(state.s.readOnly, stateShape, name: "S", meaning: "B×H×C×M")
        try Self.expectToken(state.z.readOnly, normalizerShape, name: "z", meaning: "B×H×C×1")
        try checkStateStepMemory(query: query, key: key, value: value, output: output, state: state)
        if Self.kernelReadable(state) {
            runStep(query: query, key: key, value: value, output: output, state: state)
            return
        }
        // The kernel walks rows of S and z with unit stride; other layouts go through a
        // contiguous copy (allocated here: the decoder's own buffers are not the caller's).
        let size = MemoryLayout<Element>.stride
        let buffer = try ScratchBuffer(slots: 1, slotBytes: (stateCount + normalizerCount) * size,
                                       for: "a contiguous copy of S, z")
        let sBase = buffer.base.bindMemory(to: Element.self, capacity: stateCount + normalizerCount)
        let staged = MutableLinearStateView(s: MutableTensorView(base: sBase, shape: stateShape),
                                            z: MutableTensorView(base: sBase + stateCount, shape: normalizerShape))
        TensorCopy.copy(from: state.s.readOnly, to: staged.s)
        TensorCopy.copy(from: state.z.readOnly, to: staged.z)
        runStep(query: query, key: key, value: value, output: output, state: staged)
        TensorCopy.copy(from: staged.s.readOnly, to: state.s)
        TensorCopy.copy(from: staged.z.readOnly, to: state.z)
    }

    /// True when the step kernel can address `state` directly: unit stride along M in S and
    /// along C in z (any stride on a length-1 axis).
    private static func kernelReadable(_ state: MutableLinearStateView<Element>) -> Bool {
        (state.s.shape[3] <= 1 || state.s.strides[3] == 1) && (state.z.shape[2] <= 1 || state.z.strides[2] == 1)
    }

    func checkTokens<E>(query: TensorView<E>, key: TensorView<E>, value: TensorView<E>,
                        output: MutableTensorView<E>) throws(PerformerError) {
        try Self.expectToken(query, SIMD4(batch, heads, 1, headDim), name: "q", meaning: "B×H×1×D")
        try Self.expectToken(key, SIMD4(batch, keyHeads, 1, headDim), name: "k", meaning: "B×Hk×1×D")
        try Self.expectToken(value, SIMD4(batch, keyHeads, 1, valueDim), name: "v", meaning: "B×Hk×1×M")
        try Self.expectToken(output.readOnly, SIMD4(batch, heads, 1, valueDim), name: "out", meaning: "B×H×1×M")
    }

    /// The step kernel over validated tokens and a kernel-readable state.
    private func runStep(query: TensorView<Element>, key: TensorView<Element>, value: TensorView<Element>,
                         output: MutableTensorView<Element>, state: MutableLinearStateView<Element>) {
        guard batch * heads > 0 else { return }
        let kernels = Runtime.kernels.linear
        var task = LinearStepTask(
            batch: batch, heads: heads, group: heads / keyHeads, headDim: headDim, valueDim: valueDim,
            featureDim: featureDim, featureMap: LinearFeatureKind(rawValue: featureMap.rawValue)!, epsilon: epsilon,
            query: UnsafeRawPointer(query.base), queryStrides: query.strides,
            key: UnsafeRawPointer(key.base), keyStrides: key.strides,
            value: UnsafeRawPointer(value.base), valueStrides: value.strides,
            output: UnsafeMutableRawPointer(output.base), outputStrides: output.strides,
            state: UnsafeMutableRawPointer(state.s.base), stateStrides: state.s.strides,
            normalizer: UnsafeMutableRawPointer(state.z.base), normalizerStrides: state.z.strides, scratch: scratch)
        (Element.dtype == .float32 ? kernels.stepFloat : kernels.stepDouble)(&task)
    }

    /// Runs causal linear attention over a prompt (q B×H×N×D, k B×Hk×N×D, v B×Hk×N×M → out
    /// B×H×N×M) from the current state, and keeps the final state: the same as N steps.
    public func prefill(query: TensorView<Element>, key: TensorView<Element>, value: TensorView<Element>,
                        output: MutableTensorView<Element>) throws(PerformerError) {
        let problem = try prefillProblem(query: query, key: key, value: value, output: output)
        let own = ownState
        try LinearAttention.run(problem, query: query, key: key, value: value, output: output,
                                initialState: own.readOnly, finalState: own)
    }

    /// A prompt's causal problem, checked against the decoder (sizes, out's shape, no output
    /// overlapping an input): the checks and messages of `prefill` for every token type.
    func prefillProblem<T>(query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
                           output: MutableTensorView<T>) throws(PerformerError) -> LinearProblem {
        let options = LinearAttentionOptions(causal: true, featureMap: featureMap, epsilon: epsilon)
        let problem = try LinearProblem(query: query, key: key, value: value, options: options)
        try ShapeCheck.expect(problem.batch == batch && problem.heads == heads && problem.keyHeads == keyHeads
            && problem.shape.headDim == headDim && problem.shape.valueDim == valueDim,
            "q \(TensorLayout.describe(query.shape)), v \(TensorLayout.describe(value.shape)) do not match the decoder (B = \(batch), H = \(heads), Hk = \(keyHeads), D = \(headDim), M = \(valueDim))")
        try ShapeCheck.expectShape(output.readOnly, problem.outputShape, name: "out", meaning: "B×H×N×M")
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(output, name: "out"),
        ])
        return problem
    }

    /// Replaces the state with a caller's (S: B×H×C×M, z: B×H×C×1), e.g. a causal forward's final
    /// state. On error the state is unchanged.
    public func loadState(_ source: LinearStateView<Element>) throws(PerformerError) {
        try ShapeCheck.expectShape(source.s, stateShape, name: "S", meaning: "B×H×C×M")
        try ShapeCheck.expectShape(source.z, normalizerShape, name: "z", meaning: "B×H×C×1")
        _ = try TensorFootprint(source.s, name: "S")
        _ = try TensorFootprint(source.z, name: "z")
        TensorCopy.copy(from: source.s, to: ownState.s)
        TensorCopy.copy(from: source.z, to: ownState.z)
    }

    /// Copies the state into caller views (S: B×H×C×M, z: B×H×C×1).
    public func storeState(into target: MutableLinearStateView<Element>) throws(PerformerError) {
        try Self.expectToken(target.s.readOnly, stateShape, name: "S", meaning: "B×H×C×M")
        try Self.expectToken(target.z.readOnly, normalizerShape, name: "z", meaning: "B×H×C×1")
        // TensorFootprint.checkOutputsDisjoint's checks and messages, without its arrays.
        let s = try Self.span(UnsafePointer(target.s.base), target.s.shape, target.s.strides, name: "S", writable: true)
        let z = try Self.span(UnsafePointer(target.z.base), target.z.shape, target.z.strides, name: "z", writable: true)
        if let s, let z, s.overlaps(z) { throw PerformerError(.aliasing, "output S overlaps output z") }
        TensorCopy.copy(from: ownState.s.readOnly, to: target.s)
        TensorCopy.copy(from: ownState.z.readOnly, to: target.z)
    }

    /// The decoder's own state as contiguous views (valid while the decoder lives).
    private var ownState: MutableLinearStateView<Element> {
        MutableLinearStateView(s: MutableTensorView(base: state, shape: stateShape),
                               z: MutableTensorView(base: normalizer, shape: normalizerShape))
    }

    private static func expectToken<E>(_ view: TensorView<E>, _ expected: SIMD4<Int>, name: StaticString, meaning: StaticString)
        throws(PerformerError) {
        if view.shape != expected {
            try ShapeCheck.expectShape(view, expected, name: "\(name)", meaning: "\(meaning)")
        }
    }

    /// The bytes a view spans (nil when empty; throws when not representable), as TensorFootprint
    /// computes them, and for a writable view the check that it does not overlap itself: the
    /// caller-state checks, without TensorFootprint's arrays.
    @inline(__always)
    private static func span<V>(_ base: UnsafePointer<V>, _ shape: SIMD4<Int>, _ strides: SIMD4<Int>, name: String,
                                writable: Bool) throws(PerformerError) -> ClosedRange<UInt>? {
        let bytes = try TensorLayout.byteRange(base: base, shape: shape, strides: strides,
                                               elementSize: MemoryLayout<V>.stride, name: name)
        if writable { try TensorLayout.checkNoSelfOverlap(shape: shape, strides: strides, name: name) }
        return bytes
    }

    /// The step's memory checks without allocating: every extent representable, and the output
    /// neither overlapping itself nor any input.
    func checkStepMemory<E>(query: TensorView<E>, key: TensorView<E>, value: TensorView<E>,
                            output: MutableTensorView<E>) throws(PerformerError) {
        let size = MemoryLayout<E>.stride
        let q = try TensorLayout.byteRange(base: query.base, shape: query.shape, strides: query.strides, elementSize: size, name: "q")
        let k = try TensorLayout.byteRange(base: key.base, shape: key.shape, strides: key.strides, elementSize: size, name: "k")
        let v = try TensorLayout.byteRange(base: value.base, shape: value.shape, strides: value.strides, elementSize: size, name: "v")
        let o = try TensorLayout.byteRange(base: output.base, shape: output.shape, strides: output.strides, elementSize: size, name: "out")
        guard let o else { return }
        if let q, q.overlaps(o) { throw PerformerError(.aliasing, "output out overlaps input q") }
        if let k, k.overlaps(o) { throw PerformerError(.aliasing, "output out overlaps input k") }
        if let v, v.overlaps(o) { throw PerformerError(.aliasing, "output out overlaps input v") }
        try TensorLayout.checkNoSelfOverlap(shape: output.shape, strides: output.strides, name: "out")
    }

    /// The caller-state step's memory checks without allocating, in the order and with the
    /// messages of TensorFootprint's (each view's extent, then each writable view's self-overlap;
    /// then out, S and z each against every other view): what a step pays is a few compares.
    func checkStateStepMemory(query: TensorView<Element>, key: TensorView<Element>, value: TensorView<Element>,
                              output: MutableTensorView<Element>, state: MutableLinearStateView<Element>) throws(PerformerError) {
        let q = try Self.span(query.base, query.shape, query.strides, name: "q", writable: false)
        let k = try Self.span(key.base, key.shape, key.strides, name: "k", writable: false)
        let v = try Self.span(value.base, value.shape, value.strides, name: "v", writable: false)
        let o = try Self.span(UnsafePointer(output.base), output.shape, output.strides, name: "out", writable: true)
        let s = try Self.span(UnsafePointer(state.s.base), state.s.shape, state.s.strides, name: "S", writable: true)
        let z = try Self.span(UnsafePointer(state.z.base), state.z.shape, state.z.strides, name: "z", writable: true)
        func apart(_ output: ClosedRange<UInt>?, _ other: ClosedRange<UInt>?, _ message: StaticString) throws(PerformerError) {
            if let output, let other, output.overlaps(other) { throw PerformerError(.aliasing, "\(message)") }
        }
        try apart(o, q, "output out overlaps input q")
        try apart(o, k, "output out overlaps input k")
        try apart(o, v, "output out overlaps input v")
        try apart(o, s, "output out overlaps output S")
        try apart(o, z, "output out overlaps output z")
        try apart(s, q, "output S overlaps input q")
        try apart(s, k, "output S overlaps input k")
        try apart(s, v, "output S overlaps input v")
        try apart(s, z, "output S overlaps output z")
        try apart(z, q, "output z overlaps input q")
        try apart(z, k, "output z overlaps input k")
        try apart(z, v, "output z overlaps input v")
    }
}
