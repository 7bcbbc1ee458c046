import PerformerKernelInterface

/// Rows per chunk of the chunked form (ALGORITHMS.md §2 "Fast form"). The intra-chunk triangle
/// costs ~T·(C + M) per token on top of the 4·C·M of the state products, so T is as small as
/// keeps the products whole micro-kernel tiles: 32 = one AVX-512 float tile width. Measured at
/// N = 16384, D = M = 64, 1 thread: causal fwd 39 -> 44% of peak, fwd+bwd 31 -> 33% going 64 -> 32.
/// With AVX2's 6-row tiles (and the portable build's) 32 rows leave a 2-row tile per chunk at a
/// full tile's cost; 24 = 4 whole tiles does ~11% fewer tile-steps per token. Measured at N = 8192,
/// causal elu+1, 2 threads, % of the paired micro-kernel peak (CPU time), 3 alternating runs:
/// fwd 45 -> 48%, fwd+bwd 36 -> 38–39% (12 rows: 48% and 37%).
#if PERFORMER_ISA_AVX512
let linearChunkRows = 32
#else
let linearChunkRows = 24
#endif

/// Rows per chunk of the non-causal forward, which has no intra-chunk triangle: its chunks only
/// set the depth of S += φ(K_c)ᵀ V_c (each chunk reloads and stores S's tiles) and the rows of
/// φ(Q_c) S, so they are larger (128 and 256 measured alike, 128 keeps the panels in L2).
let linearNonCausalChunkRows = 128

/// The per-task scratch of every linear-attention kernel, carved from one 64-byte-aligned block.
/// Sizing and carving share this code, so `bytes` can never disagree with what a kernel uses.
/// Panels are row-major with rows padded to `linearPanelWidth` (leading dimensions `cp`, `mp`,
/// `tp`); the carve zeroes everything, so padding columns read as zeros.
/// Everything is O(chunk · max(C, M) + C · M) except `perPosition`, the causal backward's two
/// scalars per position (denominator and its gradient) that let the reverse sweep rebuild
/// ∂L/∂numerator from dO without storing any state S_i.
struct LinearScratch<T: KernelScalar> {
    /// Rows per chunk of the kernel this scratch is for (`linearChunkRows`, or for the
    /// non-causal forward `linearNonCausalChunkRows`, less for shorter sequences).
    var rows: Int
    /// Leading dimensions: padded C, padded M, chunk rows.
    var cp: Int, mp: Int, tp: Int
    var queryFeatures: UnsafeMutablePointer<T>     // T × cp  φ(Q_c)
    var keyFeatures: UnsafeMutablePointer<T>       // T × cp  φ(K_c), zero rows for padded keys
    var keyFeaturesT: UnsafeMutablePointer<T>      // C × tp  φ(K_c)ᵀ (causal)
    var values: UnsafeMutablePointer<T>            // T × mp  V_c
    var valuesT: UnsafeMutablePointer<T>           // M × tp  V_cᵀ (causal backward)
    var rowsM: UnsafeMutablePointer<T>             // T × mp  numerator, or ∂L/∂numerator = dO_i / den_i
    var scores: UnsafeMutablePointer<T>            // T × tp  tril(φ(Q_c) φ(K_c)ᵀ)
    var scoreGradient: UnsafeMutablePointer<T>     // T × tp  tril(∂L/∂num Vᵀ [+ ∂L/∂den 1ᵀ])
    var denominator: UnsafeMutablePointer<T>       // T
    var denominatorGradient: UnsafeMutablePointer<T>  // T
    var queryEpsilon: UnsafeMutablePointer<T>      // T       ε in the row's units (`packQueryChunk`)
    var queryShift: UnsafeMutablePointer<T>        // T       the row's x_max, or 0 (`shiftQueryFeatures`)
    var featureGradient: UnsafeMutablePointer<T>   // T × cp  ∂L/∂φ(Q_c) or ∂L/∂φ(K_c)
    var valueGradient: UnsafeMutablePointer<T>     // T × mp
    var state: UnsafeMutablePointer<T>             // C × mp  S (forward)
    var stateT: UnsafeMutablePointer<T>            // M × cp  Sᵀ (backward)
    var normalizer: UnsafeMutablePointer<T>        // C       z
    var stateGradient: UnsafeMutablePointer<T>     // C × mp  G = ∂L/∂S carried backwards
    var stateGradientT: UnsafeMutablePointer<T>    // M × cp  Gᵀ (non-causal: C × mp S first)
    var normalizerGradient: UnsafeMutablePointer<T>  // C
    var perPosition: UnsafeMutablePointer<T>       // 2N (causal backward only)

    /// Carves (and zeroes) the layout from `base`, or only measures it when `base` is nil.
    init(base: UnsafeMutableRawPointer?, shape: LinearHeadShape, causal: Bool, backward: Bool, bytes: inout Int) {
        // Panels are no taller than the longest side: a sequence shorter than a chunk is one
        // chunk either way (same results), and a tiny call would otherwise zero panels of 24-128
        // rows (N = 1, D = M = 64: 50 KB, most of its time). Every chunk loop takes at most
        // min(chunk rows, that side's length) rows, and the micro-kernel reads only `rows` rows
        // of A, so no row past `t` is read; transposed panels keep their padded width `tp`.
        let longest = max(shape.queryCount, shape.keyCount, 1)
        let t = min(causal || backward ? linearChunkRows : linearNonCausalChunkRows, longest)
        // Sizes saturate (ScratchSize): a shape too large to measure gives Int.max bytes, which
        // no allocation grants, so a kernel never runs on a wrapped-around size.
        let c = ScratchSize(max(shape.featureDim, 1)), m = ScratchSize(max(shape.valueDim, 1))
        let cp = c.roundedUp(to: linearPanelWidth), mp = m.roundedUp(to: linearPanelWidth)
        let tp = ScratchSize(t).roundedUp(to: linearPanelWidth)
        rows = t
        (self.cp, self.mp, self.tp) = (cp.value, mp.value, tp.value)
        var offset: ScratchSize = 0
        func take(_ count: ScratchSize) -> UnsafeMutablePointer<T> {
            let size = (max(count, 1) * MemoryLayout<T>.stride).roundedUp(to: 64)
            defer { offset = offset + size }
            guard let base else { return UnsafeMutablePointer(bitPattern: 64)! }  // measuring only
            return (base + offset.value).bindMemory(to: T.self, capacity: max(count, 1).value)
        }
        queryFeatures = take(t * cp)
        keyFeatures = take(t * cp)
        keyFeaturesT = take(causal ? c * tp : 1)
        values = take(t * mp)
        valuesT = take(backward && causal ? m * tp : 1)
        rowsM = take(t * mp)
        scores = take(causal ? t * tp : 1)
        scoreGradient = take(backward && causal ? t * tp : 1)
        denominator = take(ScratchSize(t))
        denominatorGradient = take(ScratchSize(t))
        queryEpsilon = take(ScratchSize(t))
        queryShift = take(ScratchSize(t))
        featureGradient = take(backward ? t * cp : 1)
        valueGradient = take(backward ? t * mp : 1)
        let stateStart = offset.value
        state = take(backward ? 1 : c * mp)
        let stateEnd = offset.value
        stateT = take(backward ? m * cp : 1)
        normalizer = take(c)
        stateGradient = take(backward ? c * mp : 1)
        stateGradientT = take(backward ? max(m * cp, c * mp) : 1)
        normalizerGradient = take(backward ? c : 1)
        let chunkBytes = offset.value
        perPosition = take(backward && causal ? 2 * ScratchSize(max(shape.queryCount, 1)) : 1)
        bytes = offset.value
        // Zero the panels (not the per-position scalars, which are written before being read),
        // except the forward's state: `loadState` writes all of it, padding included, first
        // (C × M: 16 KB at C = M = 64, most of what a tiny call zeroed).
        if let base {
            if backward {
                base.initializeMemory(as: UInt8.self, repeating: 0, count: chunkBytes)
            } else {
                base.initializeMemory(as: UInt8.self, repeating: 0, count: stateStart)
                (base + stateEnd).initializeMemory(as: UInt8.self, repeating: 0, count: chunkBytes - stateEnd)
            }
        }
    }

    static func bytes(shape: LinearHeadShape, causal: Bool, backward: Bool) -> Int {
        var bytes = 0
        _ = LinearScratch(base: nil, shape: shape, causal: causal, backward: backward, bytes: &bytes)
        return bytes
    }
}

/// Copies a strided rows × columns state (C × M, or C × 1 for a normalizer) into a panel with
/// row stride `ld`, or zeroes it when absent; each row's padding columns ..< ld are zeroed.
@inline(__always)
func loadState<T: KernelScalar>(_ source: StridedMatrix?, rows: Int, columns: Int, into target: UnsafeMutablePointer<T>, ld: Int) {
    for r in 0..<rows {
        if let source {
            packRow(source, row: r, count: columns, into: target + r * ld)
        } else {
            for j in 0..<columns { target[r * ld + j] = 0 }
        }
        for j in columns..<max(columns, ld) { target[r * ld + j] = 0 }
    }
}

/// Copies a strided rows × columns state transposed into a panel (target[c][r], row stride
/// `ld`), or zeroes it when absent.
@inline(__always)
func loadStateTransposed<T: KernelScalar>(_ source: StridedMatrix?, rows: Int, columns: Int, into target: UnsafeMutablePointer<T>, ld: Int) {
    let base = source?.base.assumingMemoryBound(to: T.self)
    for r in 0..<rows {
        for c in 0..<columns {
            target[c * ld + r] = source.map { base![r * $0.rowStride + c * $0.columnStride] } ?? 0
        }
    }
}

/// Writes a state panel (row stride `ld`) into a strided one.
@inline(__always)
func storeState<T: KernelScalar>(_ values: UnsafePointer<T>, rows: Int, columns: Int, ld: Int, into target: StridedMatrix?) {
    guard let target else { return }
    for r in 0..<rows { storeRow(values + r * ld, count: columns, into: target, row: r, accumulate: false) }
}
