import PerformerKernelInterface

// Per-task scratch of the FAVOR+ attention kernels (docs/FAVOR.md §4), carved from one
// 64-byte-aligned block like the linear kernels' (LinearScratch): panels are row-major with
// rows padded to `linearPanelWidth`, zeroed by the carve, so the padding of every panel used as
// the B operand of a `chunkProduct` reads as zeros (and the padding columns of every product
// written from such panels stay zero).

/// Rows per chunk of the causal form, and rows per block of the bidirectional sweeps (32 on
/// every ISA: the linear kernels' 24-row AVX2 chunks were measured for C = 64 only).
let favorChunkRows = 32

struct FavorScratch<T: KernelScalar> {
    /// Leading dimensions: padded D, m, C, M, chunk rows.
    var dp: Int, mp: Int, cp: Int, vp: Int, tp: Int
    var projectionT: UnsafeMutablePointer<T>   // D × mp   Wᵀ (the B panel of U = X̂ Wᵀ)
    var projection: UnsafeMutablePointer<T>    // m × dp   W  (the B panel of dx̂ = g_u W; backward)
    var queryInput: UnsafeMutablePointer<T>    // T × dp   x̂ of the chunk's queries
    var keyInput: UnsafeMutablePointer<T>      // T × dp   x̂ of the chunk's keys
    var queryU: UnsafeMutablePointer<T>        // T × mp   u = W x̂
    var keyU: UnsafeMutablePointer<T>          // T × mp
    var queryExponents: UnsafeMutablePointer<T>  // T × cp  a(q) (exponential kinds)
    var keyExponents: UnsafeMutablePointer<T>    // T × cp  a(k)
    var queryHat: UnsafeMutablePointer<T>      // T × cp   Q̂ (row-normalized features)
    var queryTilde: UnsafeMutablePointer<T>    // T × cp   Q̃ scaled to the row unit: reads the state
    var keyHat: UnsafeMutablePointer<T>        // T × cp   K̂, zero rows for padded keys
    var keyHatT: UnsafeMutablePointer<T>       // C × tp   K̂ᵀ
    var bar: UnsafeMutablePointer<T>           // T × cp   K̄ / Q̄: rows folded into a scaled state
    var values: UnsafeMutablePointer<T>        // T × vp   V_c
    var valuesT: UnsafeMutablePointer<T>       // M × tp   V_cᵀ (backward)
    var weights: UnsafeMutablePointer<T>       // T × tp   ν²·exp(ρ_i + κ_j − U_i), j ≤ i (causal)
    var scores: UnsafeMutablePointer<T>        // T × tp   P (causal)
    var scoreGradient: UnsafeMutablePointer<T> // T × tp   ∂L/∂P ∘ weights (backward, causal)
    var rowsM: UnsafeMutablePointer<T>         // T × vp   numerator, then ∂L/∂numerator
    var outputGradient: UnsafeMutablePointer<T>  // T × vp  dO_c (backward)
    var gradient1: UnsafeMutablePointer<T>     // T × cp   intra-chunk part of the feature gradient
    var gradient2: UnsafeMutablePointer<T>     // T × cp   state part of the feature gradient
    var projectionGradient: UnsafeMutablePointer<T>  // T × mp  g_u (backward)
    var inputGradient: UnsafeMutablePointer<T> // T × dp   dx̂ (backward)
    var valueGradient: UnsafeMutablePointer<T> // T × vp   (backward)
    var rowQ: UnsafeMutablePointer<T>          // 11 × T   per-row scalars, see `Row`
    var state: UnsafeMutablePointer<T>         // C × vp   S̃
    var stateT: UnsafeMutablePointer<T>        // M × cp   S̃ᵀ (backward)
    var normalizer: UnsafeMutablePointer<T>    // C        z̃
    var shift: UnsafeMutablePointer<T>         // C        c
    var newShift: UnsafeMutablePointer<T>      // C
    var stateGradient: UnsafeMutablePointer<T>   // C × vp  G̃ (backward)
    var stateGradientT: UnsafeMutablePointer<T>  // M × cp  G̃ᵀ
    var normalizerGradient: UnsafeMutablePointer<T>  // C    g̃
    var gradientShift: UnsafeMutablePointer<T> // C        e
    var perPosition: UnsafeMutablePointer<T>   // 4N (causal backward): U_i, den_i, ∂L/∂den_i, exact-row flag
    var perChunk: UnsafeMutablePointer<T>      // 2 T × tp per chunk (causal backward): P, score gradient

    /// Per-row scalars of the current chunk, each a T-vector inside `rowQ`.
    enum Row: Int {
        case queryShift = 0    // ρ_i
        case keyShift          // κ_j (−inf: padded key)
        case unit              // U_i (−inf: the row sees no key)
        case queryHalf         // n_i/2 of queries (x̂ squared norm halved)
        case keyHalf
        case denominator
        case denominatorGradient
        case rowFactor         // trigonometric/relu: the row's scalar state weight (ν·exp(ρ_i + c − U_i), …)
        case logScale          // the log-scale of a row folded into a scaled state (see `accumulate`)
        case halfGradient      // g_n = ∂L/∂n of a row (input gradient)
        case inverseDenominator  // 1/den_i (0 for a row without output)
    }

    func row(_ r: Row) -> UnsafeMutablePointer<T> { rowQ + r.rawValue * favorChunkRows }

    /// Chunk `index`'s P and score gradient in `perChunk` (T × tp each).
    func storedChunk(_ index: Int) -> (scores: UnsafeMutablePointer<T>, scoreGradient: UnsafeMutablePointer<T>) {
        let scores = perChunk + 2 * index * favorChunkRows * tp
        return (scores, scores + favorChunkRows * tp)
    }

    init(base: UnsafeMutableRawPointer?, shape: FavorHeadShape, causal: Bool, backward: Bool, bytes: inout Int) {
        // Sizes saturate (ScratchSize): a shape too large to measure gives Int.max bytes, which
        // no allocation grants, so a kernel never runs on a wrapped-around size.
        let t = favorChunkRows, d = ScratchSize(max(shape.dim, 1)), m = ScratchSize(max(shape.numFeatures, 1))
        let c = ScratchSize(max(shape.featureCount, 1)), mv = ScratchSize(max(shape.valueDim, 1))
        let dp = d.roundedUp(to: linearPanelWidth), mp = m.roundedUp(to: linearPanelWidth)
        let cp = c.roundedUp(to: linearPanelWidth), vp = mv.roundedUp(to: linearPanelWidth)
        let tp = ScratchSize(t).roundedUp(to: linearPanelWidth)
        (self.dp, self.mp, self.cp, self.vp, self.tp) = (dp.value, mp.value, cp.value, vp.value, tp.value)
        var offset: ScratchSize = 0
        func take(_ count: ScratchSize) -> UnsafeMutablePointer<T> {
            let size = (max(count, 1) * MemoryLayout<T>.stride).roundedUp(to: 64)
            defer { offset = offset + size }
            guard let base else { return UnsafeMutablePointer(bitPattern: 64)! }  // measuring only
            return (base + offset.value).bindMemory(to: T.self, capacity: max(count, 1).value)
        }
        func takeIf(_ condition: Bool, _ count: ScratchSize) -> UnsafeMutablePointer<T> { take(condition ? count : 1) }
        projectionT = take(d * mp)
        projection = takeIf(backward, m * dp)
        queryInput = take(t * dp)
        keyInput = take(t * dp)
        queryU = take(t * mp)
        keyU = take(t * mp)
        queryExponents = take(t * cp)
        keyExponents = take(t * cp)
        queryHat = take(t * cp)
        queryTilde = take(t * cp)
        keyHat = take(t * cp)
        keyHatT = takeIf(causal, c * tp)
        bar = take(t * cp)
        values = take(t * vp)
        valuesT = takeIf(backward && causal, mv * tp)
        weights = takeIf(causal, t * tp)
        scores = takeIf(causal, t * tp)
        scoreGradient = takeIf(backward && causal, t * tp)
        rowsM = take(t * vp)
        outputGradient = takeIf(backward, t * vp)
        gradient1 = takeIf(backward, t * cp)
        gradient2 = takeIf(backward, t * cp)
        projectionGradient = takeIf(backward, t * mp)
        inputGradient = takeIf(backward, t * dp)
        valueGradient = takeIf(backward, t * vp)
        rowQ = take(ScratchSize(11 * t))
        state = take(c * vp)
        stateT = takeIf(backward, mv * cp)
        normalizer = take(c)
        shift = take(c)
        newShift = take(c)
        stateGradient = takeIf(backward, c * vp)
        stateGradientT = takeIf(backward, mv * cp)
        normalizerGradient = takeIf(backward, c)
        gradientShift = takeIf(backward, c)
        let panelBytes = offset.value
        perPosition = takeIf(backward && causal, 4 * ScratchSize(max(shape.queryCount, 1)))
        let chunks = ScratchSize(max(shape.queryCount, 1)).roundedUp(to: t).value / t
        perChunk = takeIf(backward && causal, 2 * ScratchSize(chunks) * t * tp)
        bytes = offset.value
        if let base { base.initializeMemory(as: UInt8.self, repeating: 0, count: panelBytes) }
    }

    static func bytes(shape: FavorHeadShape, causal: Bool, backward: Bool) -> Int {
        var bytes = 0
        _ = FavorScratch(base: nil, shape: shape, causal: causal, backward: backward, bytes: &bytes)
        return bytes
    }
}

/// C (= or +=) A·B with `chunkProduct`'s operand contract (LinearChunkProducts.swift), on the
/// shared micro-kernel: columns are rounded up to whole tiles (2·lanes ≤ `linearPanelWidth`),
/// which the padded panels allow; their zero padding keeps the extra columns zero.
@inline(__always)
func favorProduct<T: KernelScalar>(
    rows: Int, columns: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool
) {
    guard rows > 0, columns > 0 else { return }
    let tile = microKernelColumns(T.self)
    blockProduct(rows: rows, columns: (columns + tile - 1) / tile * tile, depth: depth,
                 a: a, aRowStride: aRowStride, aDepthStride: aDepthStride, b: b, bRowStride: bRowStride,
                 c: c, cRowStride: cRowStride, accumulate: accumulate)
}
