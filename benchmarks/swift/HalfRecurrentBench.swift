// Causal linear attention and causal FAVOR+ (m = 256) on float16 / bfloat16 storage beside
// float32: what the convert-to-float32 path (widen q, k, v, dout; float32 kernels; round out,
// dq, dk, dv) costs. The conversion is O(N·D) against the O(N·C·M) recurrence, so the ratio
// column (half time over float32 time, same process, same load) shows its whole overhead.
// Then the decoders: one step (B = 1, H = 8) with half tokens and a float32 state beside a
// float32 step, where widening three token rows and rounding one is the whole overhead.
import PerformerCore

/// Contiguous B = 1 tensors of one element type and the closures that run one algorithm on them.
private struct RecurrentRun<E: TensorElement> {
    let q, k, v, dO, out, dq, dk, dv: UnsafeMutablePointer<E>
    let shape: SIMD4<Int>

    init(n: Int, heads: Int, d: Int, convert: (Float) -> E) {
        shape = SIMD4(1, heads, n, d)
        let count = heads * n * d
        func filled(_ seed: UInt64) -> UnsafeMutablePointer<E> {
            let floats = randomFloats(count, seed: seed)
            defer { floats.deallocate() }
            let result = UnsafeMutablePointer<E>.allocate(capacity: count)
            for i in 0..<count { (result + i).initialize(to: convert(floats[i])) }
            return result
        }
        (q, k, v, dO) = (filled(1), filled(2), filled(3), filled(4))
        (out, dq, dk, dv) = (filled(5), filled(6), filled(7), filled(8))
    }

    func view(_ p: UnsafeMutablePointer<E>) -> TensorView<E> { TensorView(base: UnsafePointer(p), shape: shape) }
    func output(_ p: UnsafeMutablePointer<E>) -> MutableTensorView<E> { MutableTensorView(base: p, shape: shape) }
    func release() { for p in [q, k, v, dO, out, dq, dk, dv] { p.deallocate() } }
}

private typealias Passes = (forward: () throws -> Void, both: () throws -> Void, release: () -> Void)

// float32 and the half types reach different PerformerCore overloads (states in float32 for a
// half call): each row names its overload, `linearPasses(_:forward:backward:)` makes the calls.
private func linearPasses(_ r: RecurrentRun<Float>) -> Passes {
    linearPasses(r, forward: LinearAttention.forward, backward: LinearAttention.backward)
}

private func linearPasses<H: HalfPrecisionScalar>(_ r: RecurrentRun<H>) -> Passes {
    linearPasses(r, forward: LinearAttention.forward, backward: LinearAttention.backward)
}

private func favorPasses(_ r: RecurrentRun<Float>, _ w: FavorProjection) -> Passes {
    favorPasses(r, w, forward: FavorAttention.forward, backward: FavorAttention.backward)
}

private func favorPasses<H: HalfPrecisionScalar>(_ r: RecurrentRun<H>, _ w: FavorProjection) -> Passes {
    favorPasses(r, w, forward: FavorAttention.forward, backward: FavorAttention.backward)
}

/// Causal linear attention's passes over `r`, through `forward` and `backward` (E's overloads;
/// states, in S, not passed).
private func linearPasses<E: TensorElement, S: AttentionScalar>(
    _ r: RecurrentRun<E>,
    forward: @escaping (TensorView<E>, TensorView<E>, TensorView<E>, MutableTensorView<E>, LinearStateView<S>?,
                        MutableLinearStateView<S>?, MutableTensorView<S>?, LinearAttentionOptions) throws -> Void,
    backward: @escaping (TensorView<E>, TensorView<E>, TensorView<E>, TensorView<E>, MutableTensorView<E>,
                         MutableTensorView<E>, MutableTensorView<E>, LinearStateView<S>?, LinearStateView<S>?,
                         MutableLinearStateView<S>?, LinearAttentionOptions) throws -> Void
) -> Passes {
    let options = LinearAttentionOptions(causal: true)
    let forwardPass = { () throws in
        try forward(r.view(r.q), r.view(r.k), r.view(r.v), r.output(r.out), nil, nil, nil, options)
    }
    return (forwardPass, { () throws in
        try forwardPass()
        try backward(r.view(r.q), r.view(r.k), r.view(r.v), r.view(r.dO), r.output(r.dq), r.output(r.dk), r.output(r.dv),
                     nil, nil, nil, options)
    }, r.release)
}

/// Causal FAVOR+'s passes over `r` with projection `w`, through `forward` and `backward` (as
/// `linearPasses`).
private func favorPasses<E: TensorElement, S: AttentionScalar>(
    _ r: RecurrentRun<E>, _ w: FavorProjection,
    forward: @escaping (TensorView<E>, TensorView<E>, TensorView<E>, FavorProjection, MutableTensorView<E>,
                        FavorStateView<S>?, MutableFavorStateView<S>?, FavorAttentionOptions) throws -> Void,
    backward: @escaping (TensorView<E>, TensorView<E>, TensorView<E>, FavorProjection, TensorView<E>,
                         MutableTensorView<E>, MutableTensorView<E>, MutableTensorView<E>, FavorStateView<S>?,
                         LinearStateView<S>?, MutableLinearStateView<S>?, FavorAttentionOptions) throws -> Void
) -> Passes {
    let options = FavorAttentionOptions(causal: true)
    let forwardPass = { () throws in
        try forward(r.view(r.q), r.view(r.k), r.view(r.v), w, r.output(r.out), nil, nil, options)
    }
    return (forwardPass, { () throws in
        try forwardPass()
        try backward(r.view(r.q), r.view(r.k), r.view(r.v), w, r.view(r.dO), r.output(r.dq), r.output(r.dk),
                     r.output(r.dv), nil, nil, nil, options)
    }, r.release)
}

func runHalfRecurrentBench(lengths: [Int], heads: Int, d: Int) throws {
    let w = try FavorProjection(dim: d, numFeatures: 256, seed: 1)
    print("causal linear attention (elu+1) and causal FAVOR+ (positive, m = 256) by storage dtype")
    print("ratio: time over float32's in the same process (the conversion overhead of the convert-to-float32 path)")
    print("| algorithm | N | dtype | fwd ms | fwd ratio | fwd+bwd ms | fwd+bwd ratio |")
    print("|---|---|---|---|---|---|---|")
    for n in lengths {
        let runs = n >= 16384 ? 5 : 9
        for algorithm in ["linear", "favor m=256"] {
            let isLinear = algorithm == "linear"
            let float32 = RecurrentRun<Float>(n: n, heads: heads, d: d, convert: { $0 })
            let float16 = RecurrentRun<Float16>(n: n, heads: heads, d: d, convert: { Float16($0) })
            let bfloat16 = RecurrentRun<BFloat16>(n: n, heads: heads, d: d, convert: { BFloat16($0) })
            let passes: [(String, Passes)] = [
                ("float32", isLinear ? linearPasses(float32) : favorPasses(float32, w)),
                ("float16", isLinear ? linearPasses(float16) : favorPasses(float16, w)),
                ("bfloat16", isLinear ? linearPasses(bfloat16) : favorPasses(bfloat16, w)),
            ]
            defer { for (_, pass) in passes { pass.release() } }
            for row in try timeAgainstFirst(runs: runs, passes.map { ($0.0, $0.1.forward, $0.1.both) }) {
                print("| \(algorithm) | \(n) | \(row.name) | \(format1(row.forward * 1e3)) | \(format2(row.forwardRatio)) | \(format1(row.both * 1e3)) | \(format2(row.bothRatio)) |")
            }
        }
    }
}

/// `tokens` steps of a linear decoder and of a FAVOR+ decoder (both float32 decoders) fed tokens
/// of type E: the token rows of `run`, position by position.
private func decoderSteps<E: TensorElement>(_ run: RecurrentRun<E>, tokens: Int,
    step: @escaping (TensorView<E>, TensorView<E>, TensorView<E>, MutableTensorView<E>) throws -> Void)
    -> () throws -> Void {
    let shape = run.shape
    let token = SIMD4(1, shape[1], 1, shape[3]), strides = SIMD4(shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1)
    return {
        for t in 0..<tokens {
            func at(_ p: UnsafeMutablePointer<E>) -> UnsafeMutablePointer<E> { p + t * shape[3] }
            try step(TensorView(base: UnsafePointer(at(run.q)), shape: token, strides: strides),
                     TensorView(base: UnsafePointer(at(run.k)), shape: token, strides: strides),
                     TensorView(base: UnsafePointer(at(run.v)), shape: token, strides: strides),
                     MutableTensorView(base: at(run.out), shape: token, strides: strides))
        }
    }
}

func runHalfDecoderBench(heads: Int, d: Int) throws {
    let tokens = 256
    let w = try FavorProjection(dim: d, numFeatures: 256, seed: 1)
    print("")
    print("decoder steps (B = 1, H = \(heads), D = M = \(d); FAVOR+ positive, m = 256): half tokens, float32 state")
    print("| decoder | dtype | us/token | ratio |")
    print("|---|---|---|---|")
    let float32 = RecurrentRun<Float>(n: tokens, heads: heads, d: d, convert: { $0 })
    let float16 = RecurrentRun<Float16>(n: tokens, heads: heads, d: d, convert: { Float16($0) })
    let bfloat16 = RecurrentRun<BFloat16>(n: tokens, heads: heads, d: d, convert: { BFloat16($0) })
    defer { float32.release(); float16.release(); bfloat16.release() }
    for kind in ["linear", "favor m=256"] {
        func linear() throws -> LinearAttentionDecoder<Float> {
            try LinearAttentionDecoder<Float>(batch: 1, heads: heads, headDim: d, valueDim: d)
        }
        func favor() throws -> FavorDecoder<Float> { try FavorDecoder<Float>(projection: w, batch: 1, heads: heads, valueDim: d) }
        let runs: [(String, () throws -> Void)]
        if kind == "linear" {
            let (a, b, c) = (try linear(), try linear(), try linear())
            runs = [("float32", decoderSteps(float32, tokens: tokens) { try a.step(query: $0, key: $1, value: $2, output: $3) }),
                    ("float16", decoderSteps(float16, tokens: tokens) { try b.step(query: $0, key: $1, value: $2, output: $3) }),
                    ("bfloat16", decoderSteps(bfloat16, tokens: tokens) { try c.step(query: $0, key: $1, value: $2, output: $3) })]
        } else {
            let (a, b, c) = (try favor(), try favor(), try favor())
            runs = [("float32", decoderSteps(float32, tokens: tokens) { try a.step(query: $0, key: $1, value: $2, output: $3) }),
                    ("float16", decoderSteps(float16, tokens: tokens) { try b.step(query: $0, key: $1, value: $2, output: $3) }),
                    ("bfloat16", decoderSteps(bfloat16, tokens: tokens) { try c.step(query: $0, key: $1, value: $2, output: $3) })]
        }
        var base: Double?
        for (name, body) in runs {
            let seconds = try time(runs: 7, body) / Double(tokens)
            let reference = base ?? seconds
            base = reference
            print("| \(kind) | \(name) | \(format1(seconds * 1e6)) | \(format2(seconds / reference)) |")
        }
    }
}
