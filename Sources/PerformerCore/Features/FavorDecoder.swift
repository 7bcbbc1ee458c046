#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

/// Token-by-token causal FAVOR+ attention (docs/FAVOR.md §4, "Decoder step"): holds the scaled
/// state (S̃, z̃, c) of B × H heads and, per call, folds in one key/value and reads it with one
/// query. O(C·M) per head and token, whatever the position; no allocation per step beyond
/// the thread-pool scratch.
///
/// State layout (contiguous, row-major): S̃ B×H×C×M, z̃ B×H×C, c B×H×C; the mathematical state
/// is S = diag(e^c)·S̃, z = e^c ∘ z̃. c_f = −inf means no key yet. For relu features c is 0;
/// for trigonometric features every c_f of a head holds the same scalar shift.
public final class FavorDecoder<T: AttentionScalar> {
    /// The random features every step uses (D = projection.dim).
    public let projection: FavorProjection
    /// B.
    public let batch: Int
    /// H, the heads of every token (queries, keys and values alike).
    public let heads: Int
    /// M, the value and output dimension.
    public let valueDim: Int
    /// The feature map and its scale.
    public let options: FavorFeatureOptions
    /// ε in the units of the mathematical features (default 0).
    public let epsilon: Double
    /// C.
    public let featureCount: Int
    /// S̃, B×H×C×M row-major.
    public private(set) var stateS: [T]
    /// z̃, B×H×C row-major.
    public private(set) var stateZ: [T]
    /// The shifts c, B×H×C row-major (−inf: no key yet).
    public private(set) var stateC: [T]
    private let inputScale: Double
    /// Wᵀ (D × m, row-major) in T, packed once: the step kernel's matrix-vector operand.
    private let weightsTransposed: [T]
    /// Step scratch kept across steps (no allocation per token): `scratchSlots` slots of
    /// `scratchSlotBytes`, 64-byte aligned; grown when more threads ask for slots.
    private var scratch: UnsafeMutableRawPointer?
    private var scratchSlots = 0
    private var scratchSlotBytes = 0
    /// Float32 copies of half-precision tokens (FavorDecoder+HalfPrecision.swift).
    let halfTokens = DecoderTokenStaging()

    /// A decoder with the empty state (no key yet). Throws on negative sizes, a bad ε or scale, or
    /// a state too large to allocate.
    public init(projection: FavorProjection, batch: Int, heads: Int, valueDim: Int,
                options: FavorFeatureOptions = FavorFeatureOptions(), epsilon: Double = 0) throws(PerformerError) {
        guard batch >= 0 else { throw PerformerError(.invalidArgument, "batch = \(batch) is negative") }
        guard heads >= 0 else { throw PerformerError(.invalidArgument, "heads = \(heads) is negative") }
        guard valueDim >= 0 else { throw PerformerError(.invalidArgument, "value_dim = \(valueDim) is negative") }
        guard epsilon.isFinite, epsilon >= 0 else {
            throw PerformerError(.invalidArgument, "eps = \(epsilon): must be finite and ≥ 0")
        }
        inputScale = try options.inputScale(dim: projection.dim)
        let c = options.kind.featureCount(numFeatures: projection.numFeatures)
        // The state is no argument: messages name the sizes the caller passed (C = the
        // projection's num_features, twice that for hyperbolic features).
        guard let sizes = TensorLayout.product(batch, heads, c, valueDim), let rows = TensorLayout.product(batch, heads, c) else {
            throw PerformerError(.sizeOverflow, "batch = \(batch), heads = \(heads), value_dim = \(valueDim) with C = \(c) features: the decoder state (batch × heads × C × value_dim elements) does not fit in 64 bits")
        }
        // S̃; z̃ and c (twice: reset() builds new ones while the old exist); Wᵀ.
        try MemoryReservation.check(
            (ScratchSize(sizes) + 4 * ScratchSize(rows) + ScratchSize(projection.numFeatures) * projection.dim)
                * MemoryLayout<T>.stride,
            for: "the decoder state of batch = \(batch), heads = \(heads), value_dim = \(valueDim) (B×H×C×M = \(batch)×\(heads)×\(c)×\(valueDim))")
        self.projection = projection
        self.batch = batch
        self.heads = heads
        self.valueDim = valueDim
        self.options = options
        self.epsilon = epsilon
        self.featureCount = c
        let (m, d) = (projection.numFeatures, projection.dim)
        let w = projection.matrix(as: T.self)
        var wt = [T](repeating: 0, count: m * d)
        for f in 0..<m { for col in 0..<d { wt[col * m + f] = w[f * d + col] } }
        self.weightsTransposed = wt
        stateS = [T](repeating: 0, count: sizes)
        stateZ = [T](repeating: 0, count: batch * heads * c)
        stateC = []
        reset()
    }

    deinit { free(scratch) }

    /// Slot `worker` of the kept scratch, sized for `slots` slots of `bytes` each.
    /// `bytes` is already a multiple of 64 (or saturated: then out of memory).
    private func scratchBase(slots: Int, bytes: ScratchSize) throws(PerformerError) -> UnsafeMutableRawPointer {
        if slots > scratchSlots || bytes.value > scratchSlotBytes {
            free(scratch)
            scratch = nil
            scratchSlots = 0
            let total = bytes * max(slots, 1)
            var pointer: UnsafeMutableRawPointer?
            guard !total.isSaturated, posix_memalign(&pointer, 64, total.value) == 0, let pointer else {
                throw PerformerError(.outOfMemory, "could not allocate \(max(slots, 1)) × \(bytes.value) bytes of scratch for the decoder's projection \(projection.numFeatures) × \(projection.dim) and value_dim = \(valueDim)")
            }
            (scratch, scratchSlots, scratchSlotBytes) = (pointer, max(slots, 1), bytes.value)
        }
        return scratch!
    }

    /// Forgets every key: S̃ = 0, z̃ = 0, c = −inf (0 for relu).
    public func reset() {
        for i in stateS.indices { stateS[i] = 0 }
        stateZ = [T](repeating: 0, count: batch * heads * featureCount)
        stateC = [T](repeating: options.kind == .relu ? 0 : -.infinity, count: batch * heads * featureCount)
    }

    /// Replaces the state by a caller's scaled triple (layouts as above). S̃, z̃ must be finite,
    /// c finite or −inf (then that feature's S̃ row and z̃ entry must be 0); relu needs c = 0,
    /// trigonometric one c per head.
    public func setState(s: [T], z: [T], c: [T]) throws(PerformerError) {
        let rows = batch * heads * featureCount
        guard s.count == stateS.count else {
            throw PerformerError(.shapeMismatch, "S has \(s.count) entries but B×H×C×M = \(stateS.count)")
        }
        guard z.count == rows else { throw PerformerError(.shapeMismatch, "z has \(z.count) entries but B×H×C = \(rows)") }
        guard c.count == rows else { throw PerformerError(.shapeMismatch, "c has \(c.count) entries but B×H×C = \(rows)") }
        if let bad = s.firstIndex(where: { !$0.isFinite }) { throw PerformerError(.invalidArgument, "S[\(bad)] = \(s[bad]) is not finite") }
        if let bad = z.firstIndex(where: { !$0.isFinite }) { throw PerformerError(.invalidArgument, "z[\(bad)] = \(z[bad]) is not finite") }
        for row in 0..<rows {
            let value = c[row]
            if value.isNaN || value == .infinity {
                throw PerformerError(.invalidArgument, "c[\(row)] = \(value): must be finite or -inf")
            }
            if value == -.infinity, z[row] != 0 || s[(row * valueDim)..<((row + 1) * valueDim)].contains(where: { $0 != 0 }) {
                throw PerformerError(.invalidArgument, "c[\(row)] = -inf but its S row or z entry is not 0")
            }
            if options.kind == .relu, value != 0 {
                throw PerformerError(.invalidArgument, "c[\(row)] = \(value): relu features need c = 0")
            }
            if options.kind == .trigonometric, c[row] != c[row - row % featureCount] {
                throw PerformerError(.invalidArgument, "c[\(row)] = \(value): trigonometric features need one c per head")
            }
        }
        stateS = s
        stateZ = z
        stateC = c
    }

    /// The checks of a step's tokens, for any element type; false when there is no head
    /// (nothing to do).
    func checkTokens<E>(query: TensorView<E>, key: TensorView<E>, value: TensorView<E>,
                        output: MutableTensorView<E>) throws(PerformerError) -> Bool {
        let d = projection.dim
        try ShapeCheck.expectShape(query, SIMD4(batch, heads, 1, d), name: "q", meaning: "B×H×1×D")
        try ShapeCheck.expectShape(key, SIMD4(batch, heads, 1, d), name: "k", meaning: "B×H×1×D")
        try ShapeCheck.expectShape(value, SIMD4(batch, heads, 1, valueDim), name: "v", meaning: "B×H×1×M")
        try ShapeCheck.expectShape(output.readOnly, SIMD4(batch, heads, 1, valueDim), name: "out", meaning: "B×H×1×M")
        guard batch * heads > 0 else { return false }
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(query, name: "q"), try TensorFootprint(key, name: "k"),
            try TensorFootprint(value, name: "v"), try TensorFootprint(output, name: "out"),
        ])
        return true
    }

    /// One token: q, k B×H×1×D, v B×H×1×M; writes o (B×H×1×M). Checks everything first; on
    /// error neither the state nor the output changes.
    public func step(query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: MutableTensorView<T>)
        throws(PerformerError) {
        guard try checkTokens(query: query, key: key, value: value, output: output) else { return }
        let d = projection.dim
        let taskCount = batch * heads
        let kernels = Runtime.kernels.favorStep
        // Small per-token work (a head of C = 256, M = 64 takes about a microsecond on SIMD):
        // threads only when the states are large enough to amortize handing work over (the
        // pool's workers poll between back-to-back calls, so that costs little). Heads go to
        // the kernel in groups, which share one pass over W: one group per thread.
        let work = featureCount * max(valueDim, 1)
        let threads = work * taskCount >= 1 << 16 ? min(Runtime.numThreads, taskCount) : 1
        let groupSize = max(1, min(kernels.maxGroup, (taskCount + threads - 1) / threads))
        let groups = (taskCount + groupSize - 1) / groupSize
        let slot = max(ScratchSize(kernels.scratchBytes(d, projection.numFeatures, MemoryLayout<T>.stride, groupSize)), 1)
            .roundedUp(to: 64)
        let scratchBase = try scratchBase(slots: threads, bytes: slot)
        let slotBytes = slot.value
        let entry = T.dtype == .float32 ? kernels.stepFloat : kernels.stepDouble
        let (c, mv, map) = (featureCount, valueDim, options.kind.kernelMap)
        let (scale, kappa, eps, m) = (inputScale, options.reluOffset, epsilon, projection.numFeatures)
        let stride = MemoryLayout<T>.stride
        weightsTransposed.withUnsafeBytes { w in
            stateS.withUnsafeMutableBytes { s in
                stateZ.withUnsafeMutableBytes { z in
                    stateC.withUnsafeMutableBytes { shifts in
                        // S̃ is empty when M = 0; it is then never dereferenced.
                        let (zBase, cBase) = (z.baseAddress!, shifts.baseAddress!)
                        let sBase = s.baseAddress ?? zBase
                        Runtime.parallelFor(count: groups, threads: threads) { group, worker in
                            let first = group * groupSize
                            let members = min(groupSize, taskCount - first)
                            withUnsafeTemporaryAllocation(of: FavorStepTask.self, capacity: members) { tasks in
                                for index in 0..<members {
                                    let item = first + index
                                    let (b, h) = (item / heads, item % heads)
                                    func at(_ base: UnsafeRawPointer, _ strides: SIMD4<Int>) -> UnsafeRawPointer {
                                        base + (b * strides[0] + h * strides[1]) * stride
                                    }
                                    tasks.initializeElement(at: index, to: FavorStepTask(
                                        map: map, dim: d, numFeatures: m, valueDim: mv, inputScale: scale, reluOffset: kappa,
                                        epsilon: eps, projection: w.baseAddress!,
                                        query: at(query.base, query.strides), queryStride: query.strides[3],
                                        key: at(key.base, key.strides), keyStride: key.strides[3],
                                        value: at(value.base, value.strides), valueStride: value.strides[3],
                                        output: UnsafeMutableRawPointer(mutating: at(output.base, output.strides)),
                                        outputStride: output.strides[3],
                                        stateS: sBase + item * c * mv * stride, stateZ: zBase + item * c * stride,
                                        stateC: cBase + item * c * stride, scratch: scratchBase + worker * slotBytes))
                                }
                                entry(UnsafePointer(tasks.baseAddress!), members)
                                tasks.baseAddress!.deinitialize(count: members)
                            }
                        }
                    }
                }
            }
        }
    }
}
