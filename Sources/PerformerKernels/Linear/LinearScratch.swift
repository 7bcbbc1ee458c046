import PerformerKernelInterface

/// Rows per chunk of the chunked form (ALGORITHMS.md §2 "Fast form"). 64 keeps the T × T score
/// block and the chunk's φ(Q), φ(K), V (64 × 64 each at D = M = 64, float32: 16 KiB apiece) in L1/L2
/// while making the intra-chunk products large enough to be matrix products.
let linearChunkRows = 64

/// The per-task scratch of every linear-attention kernel, carved from one 64-byte-aligned block.
/// Sizing and carving share this code, so `bytes` can never disagree with what a kernel uses.
/// Everything is O(chunk · max(C, M) + C · M) except `perPosition`, the causal backward's two
/// scalars per position (denominator and its gradient) that let the reverse sweep rebuild
/// ∂L/∂numerator from dO without storing any state S_i.
struct LinearScratch<T: BinaryFloatingPoint> {
    var queryFeatures: UnsafeMutablePointer<T>     // T × C  φ(Q_c)
    var keyFeatures: UnsafeMutablePointer<T>       // T × C  φ(K_c), zero rows for padded keys
    var values: UnsafeMutablePointer<T>            // T × M  V_c
    var rowsM: UnsafeMutablePointer<T>             // T × M  numerator, then ∂L/∂numerator
    var outputGradient: UnsafeMutablePointer<T>    // T × M  dO_c
    var scores: UnsafeMutablePointer<T>            // T × T  tril(φ(Q_c) φ(K_c)ᵀ)
    var scoreGradient: UnsafeMutablePointer<T>     // T × T  tril(∂L/∂num Vᵀ + ∂L/∂den 1ᵀ)
    var denominator: UnsafeMutablePointer<T>       // T
    var denominatorGradient: UnsafeMutablePointer<T>  // T
    var featureGradient: UnsafeMutablePointer<T>   // T × C  ∂L/∂φ(Q_c) or ∂L/∂φ(K_c)
    var valueGradient: UnsafeMutablePointer<T>     // T × M
    var state: UnsafeMutablePointer<T>             // C × M  S
    var normalizer: UnsafeMutablePointer<T>        // C      z
    var stateGradient: UnsafeMutablePointer<T>     // C × M  ∂L/∂S carried backwards
    var normalizerGradient: UnsafeMutablePointer<T>  // C
    var perPosition: UnsafeMutablePointer<T>       // 2N (causal backward only)

    /// Carves the layout from `base`, or only measures it when `base` is nil.
    init(base: UnsafeMutableRawPointer?, shape: LinearHeadShape, causal: Bool, backward: Bool, bytes: inout Int) {
        let t = linearChunkRows, c = max(shape.featureDim, 1), m = max(shape.valueDim, 1)
        var offset = 0
        func take(_ count: Int) -> UnsafeMutablePointer<T> {
            let size = (max(count, 1) * MemoryLayout<T>.stride + 63) / 64 * 64
            defer { offset += size }
            guard let base else { return UnsafeMutablePointer(bitPattern: 64)! }  // measuring only
            return (base + offset).bindMemory(to: T.self, capacity: max(count, 1))
        }
        queryFeatures = take(t * c)
        keyFeatures = take(t * c)
        values = take(t * m)
        rowsM = take(t * m)
        outputGradient = take(backward ? t * m : 1)
        scores = take(t * t)
        scoreGradient = take(backward ? t * t : 1)
        denominator = take(t)
        denominatorGradient = take(t)
        featureGradient = take(backward ? t * c : 1)
        valueGradient = take(backward ? t * m : 1)
        state = take(c * m)
        normalizer = take(c)
        stateGradient = take(backward ? c * m : 1)
        normalizerGradient = take(backward ? c : 1)
        perPosition = take(backward && causal ? 2 * max(shape.queryCount, 1) : 1)
        bytes = offset
    }

    static func bytes(shape: LinearHeadShape, causal: Bool, backward: Bool) -> Int {
        var bytes = 0
        _ = LinearScratch(base: nil, shape: shape, causal: causal, backward: backward, bytes: &bytes)
        return bytes
    }
}

/// Copies a strided C × M state (or C × 1 normalizer when m = 1) into contiguous memory, or
/// zeroes it when absent.
@inline(__always)
func loadState<T: BinaryFloatingPoint>(_ source: StridedMatrix?, rows: Int, columns: Int, into target: UnsafeMutablePointer<T>) {
    guard let source else {
        for i in 0..<(rows * columns) { target[i] = 0 }
        return
    }
    for r in 0..<rows { packRow(source, row: r, count: columns, into: target + r * columns) }
}

/// Writes a contiguous C × M state into a strided one.
@inline(__always)
func storeState<T: BinaryFloatingPoint>(_ values: UnsafePointer<T>, rows: Int, columns: Int, into target: StridedMatrix?) {
    guard let target else { return }
    for r in 0..<rows { storeRow(values + r * columns, count: columns, into: target, row: r, accumulate: false) }
}
