// Task descriptors and entry points for linear attention (ALGORITHMS.md §2).
//
// One task is one query head (b, h): PerformerCore validates the problem, resolves the key head
// h / (H/Hk), and hands the kernel strided matrices. Grouped-query attention sums dK and dV over
// the query heads of a group; PerformerCore runs those heads one after another inside one
// parallel item and sets `accumulateKeyGradients` for all but the first, so no two threads ever
// write the same dK / dV rows.

/// The feature map φ applied row-wise to queries and keys. Every built-in map keeps the width
/// (C = D).
public enum LinearFeatureKind: Int32, Sendable {
    /// φ(x) = elu(x) + 1 (x + 1 for x > 0, eˣ otherwise): positive, the paper's default.
    case eluPlusOne = 0
    /// φ(x) = max(x, 0).
    case relu = 1
    /// φ(x) = x: the caller passes features it computed itself.
    case identity = 2
}

/// The sizes of one head's problem.
public struct LinearHeadShape: Sendable, Equatable {
    public var queryCount: Int    // N
    public var keyCount: Int      // L (= N when causal)
    public var headDim: Int       // D
    public var valueDim: Int      // M
    public var featureDim: Int    // C (= D for the built-in maps)

    public init(queryCount: Int, keyCount: Int, headDim: Int, valueDim: Int, featureDim: Int) {
        self.queryCount = queryCount
        self.keyCount = keyCount
        self.headDim = headDim
        self.valueDim = valueDim
        self.featureDim = featureDim
    }
}

/// Forward or backward of one query head. Which fields a kernel reads depends on the entry:
/// - forward reads query, key, value, the optional initial state, writes output, the
///   denominators when asked and, when given, the final state (non-causal: the state over all
///   keys; with N = 0 that is a state-only call);
/// - backward reads query, key, value, outputGradient, the optional initial state and final
///   state gradient, writes queryGradient, keyGradient and valueGradient (or adds to the latter
///   two when `accumulateKeyGradients`), and the initial-state gradient when given;
/// - queryStateGradient reads query, output, outputGradient and (normalized) denominators, and
///   writes the initial-state gradient's query-side terms (never key or value).
/// States are C × M matrices (S) and C × 1 matrices (z, only `rowStride` is read). A nil input
/// state or state gradient means zeros.
public struct LinearAttentionTask: @unchecked Sendable {
    public var shape: LinearHeadShape
    public var causal: Bool
    public var featureMap: LinearFeatureKind
    /// ε of the denominator φ(q)ᵀz + ε; finite and ≥ 0. Unused when `normalize` is false.
    public var epsilon: Double
    /// false: the output is the numerator φ(q_i)ᵀS_i alone (no denominator, no division).
    public var normalize: Bool
    /// kv_len[b]: keys at or past it have φ(k) = 0 (they leave S and z untouched).
    public var keyLimit: Int
    /// kv_starts[b] (≤ keyLimit): keys before it have φ(k) = 0 too (left padding). 0 by default.
    public var keyStart: Int
    public var query: StridedMatrix                  // N × D
    public var key: StridedMatrix                    // L × D
    public var value: StridedMatrix                  // L × M
    public var output: StridedMatrix?                // N × M (forward)
    public var denominators: StridedMatrix?          // N × 1 (forward, optional; queryStateGradient's input): φ(q_i)ᵀz_i, no ε
    public var outputGradient: StridedMatrix?        // N × M (backward)
    public var queryGradient: StridedMatrix?         // N × D (backward)
    public var keyGradient: StridedMatrix?           // L × D (backward)
    public var valueGradient: StridedMatrix?         // L × M (backward)
    public var accumulateKeyGradients: Bool
    public var initialState: StridedMatrix?          // C × M
    public var initialNormalizer: StridedMatrix?     // C × 1
    public var finalState: StridedMatrix?            // C × M (forward output)
    public var finalNormalizer: StridedMatrix?       // C × 1 (forward output)
    public var finalStateGradient: StridedMatrix?    // C × M (backward input)
    public var finalNormalizerGradient: StridedMatrix?
    public var initialStateGradient: StridedMatrix?  // C × M (backward output)
    public var initialNormalizerGradient: StridedMatrix?
    /// Forward only: compute o_i = Σ_j (φ(q_i)·φ(k_j)) v_j / (Σ_j φ(q_i)·φ(k_j) + ε) directly,
    /// without the C × M state (same contract, another summation order). Set only for a task
    /// with no initial or final state whose shape `linearDirectFormFits` (the scratch is sized
    /// for it then). false by default.
    public var direct: Bool
    /// `LinearKernels.scratchBytes` bytes, 64-byte aligned, owned by this task.
    public var scratch: UnsafeMutableRawPointer

    public init(shape: LinearHeadShape, causal: Bool, featureMap: LinearFeatureKind, epsilon: Double, keyLimit: Int,
                query: StridedMatrix, key: StridedMatrix, value: StridedMatrix, scratch: UnsafeMutableRawPointer) {
        self.shape = shape
        self.causal = causal
        self.featureMap = featureMap
        self.epsilon = epsilon
        self.normalize = true
        self.keyLimit = keyLimit
        self.keyStart = 0
        self.query = query
        self.key = key
        self.value = value
        self.accumulateKeyGradients = false
        self.direct = false
        self.scratch = scratch
    }
}

/// One recurrent step for every head of a decoder (ALGORITHMS.md §2 "Recurrent step"):
/// S ← S + φ(k) vᵀ, z ← z + φ(k), o = φ(q)ᵀS / (φ(q)ᵀz + ε), for B × H heads at once.
/// Token tensors are rank-4 with the token axis of length 1: q B×H×1×D, k B×Hk×1×D,
/// v B×Hk×1×M, o B×H×1×M, addressed through `…Strides` (elements, axes b, h, token, column).
public struct LinearStepTask: @unchecked Sendable {
    public var batch: Int
    public var heads: Int
    /// H / Hk: query head h reads key head h / group.
    public var group: Int
    public var headDim: Int
    public var valueDim: Int
    public var featureDim: Int
    public var featureMap: LinearFeatureKind
    public var epsilon: Double
    public var query: UnsafeRawPointer
    public var queryStrides: SIMD4<Int>
    public var key: UnsafeRawPointer
    public var keyStrides: SIMD4<Int>
    public var value: UnsafeRawPointer
    public var valueStrides: SIMD4<Int>
    public var output: UnsafeMutableRawPointer
    public var outputStrides: SIMD4<Int>
    /// S, B × H × C × M: element (b, h, f, j) at `state[b·s0 + h·s1 + f·s2 + j]` for
    /// `stateStrides` (s0, s1, s2, 1): rows of M are unit-stride.
    public var state: UnsafeMutableRawPointer
    public var stateStrides: SIMD4<Int>
    /// z, B × H × C: element (b, h, f) at `normalizer[b·z0 + h·z1 + f]` for `normalizerStrides`
    /// (z0, z1, 1, ·): unit-stride along C.
    public var normalizer: UnsafeMutableRawPointer
    public var normalizerStrides: SIMD4<Int>
    /// `LinearKernels.stepScratchBytes` bytes, 64-byte aligned.
    public var scratch: UnsafeMutableRawPointer

    public init(batch: Int, heads: Int, group: Int, headDim: Int, valueDim: Int, featureDim: Int,
                featureMap: LinearFeatureKind, epsilon: Double,
                query: UnsafeRawPointer, queryStrides: SIMD4<Int>, key: UnsafeRawPointer, keyStrides: SIMD4<Int>,
                value: UnsafeRawPointer, valueStrides: SIMD4<Int>,
                output: UnsafeMutableRawPointer, outputStrides: SIMD4<Int>,
                state: UnsafeMutableRawPointer, stateStrides: SIMD4<Int>,
                normalizer: UnsafeMutableRawPointer, normalizerStrides: SIMD4<Int>, scratch: UnsafeMutableRawPointer) {
        self.batch = batch
        self.heads = heads
        self.group = group
        self.headDim = headDim
        self.valueDim = valueDim
        self.featureDim = featureDim
        self.featureMap = featureMap
        self.epsilon = epsilon
        self.query = query
        self.queryStrides = queryStrides
        self.key = key
        self.keyStrides = keyStrides
        self.value = value
        self.valueStrides = valueStrides
        self.output = output
        self.outputStrides = outputStrides
        self.state = state
        self.stateStrides = stateStrides
        self.normalizer = normalizer
        self.normalizerStrides = normalizerStrides
        self.scratch = scratch
    }
}

/// Entry points of one kernel module for linear attention.
public struct LinearKernels: Sendable {
    /// Scratch bytes one task needs: (shape, element size, causal, backward). The causal backward
    /// keeps two scalars per position (the denominator and its gradient), so its scratch grows
    /// as O(N); everything else is O(chunk · max(C, M) + C · M). A forward whose shape
    /// `linearDirectFormFits` gets enough for either form.
    public var scratchBytes: @Sendable (LinearHeadShape, Int, Bool, Bool) -> Int
    public var forwardFloat: @Sendable (UnsafePointer<LinearAttentionTask>) -> Void
    public var forwardDouble: @Sendable (UnsafePointer<LinearAttentionTask>) -> Void
    public var backwardFloat: @Sendable (UnsafePointer<LinearAttentionTask>) -> Void
    public var backwardDouble: @Sendable (UnsafePointer<LinearAttentionTask>) -> Void
    /// Scratch bytes of one step task: (feature dim C, value dim M, element size).
    public var stepScratchBytes: @Sendable (Int, Int, Int) -> Int
    public var stepFloat: @Sendable (UnsafePointer<LinearStepTask>) -> Void
    public var stepDouble: @Sendable (UnsafePointer<LinearStepTask>) -> Void
    /// ∂L/∂(S_0, z_0) from the query rows alone; scratch as the non-causal forward's
    /// (`scratchBytes(shape, size, false, false)` with L = 0).
    public var queryStateGradientFloat: @Sendable (UnsafePointer<LinearAttentionTask>) -> Void
    public var queryStateGradientDouble: @Sendable (UnsafePointer<LinearAttentionTask>) -> Void

    public init(
        scratchBytes: @escaping @Sendable (LinearHeadShape, Int, Bool, Bool) -> Int,
        forwardFloat: @escaping @Sendable (UnsafePointer<LinearAttentionTask>) -> Void,
        forwardDouble: @escaping @Sendable (UnsafePointer<LinearAttentionTask>) -> Void,
        backwardFloat: @escaping @Sendable (UnsafePointer<LinearAttentionTask>) -> Void,
        backwardDouble: @escaping @Sendable (UnsafePointer<LinearAttentionTask>) -> Void,
        stepScratchBytes: @escaping @Sendable (Int, Int, Int) -> Int,
        stepFloat: @escaping @Sendable (UnsafePointer<LinearStepTask>) -> Void,
        stepDouble: @escaping @Sendable (UnsafePointer<LinearStepTask>) -> Void,
        queryStateGradientFloat: @escaping @Sendable (UnsafePointer<LinearAttentionTask>) -> Void,
        queryStateGradientDouble: @escaping @Sendable (UnsafePointer<LinearAttentionTask>) -> Void
    ) {
        self.scratchBytes = scratchBytes
        self.forwardFloat = forwardFloat
        self.forwardDouble = forwardDouble
        self.backwardFloat = backwardFloat
        self.backwardDouble = backwardDouble
        self.stepScratchBytes = stepScratchBytes
        self.stepFloat = stepFloat
        self.stepDouble = stepDouble
        self.queryStateGradientFloat = queryStateGradientFloat
        self.queryStateGradientDouble = queryStateGradientDouble
    }
}
