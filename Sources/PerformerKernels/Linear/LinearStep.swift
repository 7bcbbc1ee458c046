import PerformerKernelInterface

// One recurrent step for every head of a decoder: O(C · M) per head whatever the position,
// no allocation (φ(q) and φ(k) go to the task's scratch).

func linearStep<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearStepTask>, _: T.Type) {
    let task = taskPointer.pointee
    let d = task.headDim, c = task.featureDim, m = task.valueDim
    let queryFeatures = task.scratch.bindMemory(to: T.self, capacity: linearStepScratchCount(featureDim: c, valueDim: m).value)
    let keyFeatures = queryFeatures + max(c, 1)
    let values = keyFeatures + max(c, 1)
    let numerator = values + max(m, 1)
    let states = task.state.assumingMemoryBound(to: T.self)
    let normalizers = task.normalizer.assumingMemoryBound(to: T.self)
    for b in 0..<task.batch {
        for h in 0..<task.heads {
            let hk = h / task.group
            func row(_ base: UnsafeRawPointer, _ strides: SIMD4<Int>, _ head: Int) -> StridedMatrix {
                StridedMatrix(base: UnsafeMutableRawPointer(mutating: base) + (b * strides[0] + head * strides[1]) * MemoryLayout<T>.stride,
                              rowStride: strides[2], columnStride: strides[3])
            }
            let state = states + (b * task.stateStrides[0] + h * task.stateStrides[1])
            let normalizer = normalizers + (b * task.normalizerStrides[0] + h * task.normalizerStrides[1])
            packFeatures(row(task.key, task.keyStrides, hk), row: 0, count: d, map: task.featureMap, into: keyFeatures)
            packFeatures(row(task.query, task.queryStrides, h), row: 0, count: d, map: task.featureMap, into: queryFeatures)
            let (rowEpsilon, _) = shiftQueryFeatures(row(task.query, task.queryStrides, h), row: 0, count: d, map: task.featureMap,
                                                normalize: true, epsilon: task.epsilon, features: queryFeatures)
            packRow(row(task.value, task.valueStrides, hk), row: 0, count: m, into: values)
            // z += φ(k); den = φ(q)·z + ε.
            rowAdd(keyFeatures, normalizer, c)
            let den = rowDot(queryFeatures, normalizer, c) + rowEpsilon
            stepStateColumns(state, c, m, task.stateStrides[2], keyFeatures, queryFeatures, values, numerator)
            divideRow(numerator, by: den, m)
            storeRow(numerator, count: m, into: row(task.output, task.outputStrides, h), row: 0, accumulate: false)
        }
    }
}

/// S += φ(k) vᵀ fused with num = Sᵀ φ(q) (the updated S), in one pass over S (C × M, rows
/// `rowStride` apart, unit-stride within a row): each block of up to four vectors of columns
/// keeps v and the numerator in registers while it walks the C rows, so S is loaded and stored
/// once and nothing else touches memory. Every element gets the same arithmetic whatever its
/// block (s ← fma(k, v, s), n ← fma(q, s, n) in row order; unfused on the portable build), so
/// the layout below never changes a bit.
///
/// Rows aligned to the sweep vector (the decoder's own state, 64-byte aligned) go in sweep
/// vectors: on AVX-512 (Zen 4) the zmm sweep was ~1.35x slower than the ymm one. Other rows
/// (a NumPy state is 16-byte aligned) keep native vectors: there the ymm sweep, half of whose
/// stores split a cache line, was slower than the zmm one.
@inline(__always)
private func stepStateColumns<T: KernelScalar>(
    _ state: UnsafeMutablePointer<T>, _ c: Int, _ m: Int, _ rowStride: Int, _ k: UnsafePointer<T>, _ q: UnsafePointer<T>,
    _ v: UnsafePointer<T>, _ numerator: UnsafeMutablePointer<T>
) {
    let sweepBytes = MemoryLayout<T.SweepVector>.size
    let rowsAligned = rowStride * MemoryLayout<T>.stride % sweepBytes == 0
    if rowsAligned && Int(bitPattern: state) % sweepBytes == 0 {
        stepStateColumns(SweepLanes<T>.self, state, c, m, rowStride, k, q, v, numerator)
        return
    }
    #if PERFORMER_ISA_AVX512
    if T.self == Float.self && rowsAligned && Int(bitPattern: state) % 16 == 0 && m >= 36 {
        stepFloatStatePeeled(UnsafeMutableRawPointer(state).assumingMemoryBound(to: Float.self), c, m, rowStride,
                             UnsafeRawPointer(k).assumingMemoryBound(to: Float.self),
                             UnsafeRawPointer(q).assumingMemoryBound(to: Float.self),
                             UnsafeRawPointer(v).assumingMemoryBound(to: Float.self),
                             UnsafeMutableRawPointer(numerator).assumingMemoryBound(to: Float.self))
        return
    }
    #endif
    stepStateColumns(NativeLanes<T>.self, state, c, m, rowStride, k, q, v, numerator)
}

#if PERFORMER_ISA_AVX512
/// Float rows 16 bytes off a 32-byte boundary (a NumPy array: malloc aligns to 16): the first
/// sweep takes the leading 4 columns as an xmm beside four ymm, so every later access is aligned;
/// the last sweep takes up to three ymm and a trailing xmm, scalars the rest. In a C model
/// (H = 8, 64 × 64) this pass took 1.54 µs against 2.12-2.23 for the zmm sweep on such rows and
/// 1.28 for aligned ones. The same arithmetic per element as every other block.
@inline(__always)
private func stepFloatStatePeeled(
    _ state: UnsafeMutablePointer<Float>, _ c: Int, _ m: Int, _ rowStride: Int, _ k: UnsafePointer<Float>,
    _ q: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ numerator: UnsafeMutablePointer<Float>
) {
    peeledSweep(state + 0, c, rowStride, k, q, v + 0, numerator + 0, head: true, vectors: 4, tail: false)
    var j = 36
    while j + 32 <= m {
        peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 4, tail: false)
        j += 32
    }
    let tail = m - j >= 4 && (m - j) % 8 >= 4
    switch ((m - j) / 8, tail) {  // constant arguments: each case is its own unrolled sweep
    case (0, true): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 0, tail: true)
    case (1, false): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 1, tail: false)
    case (1, true): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 1, tail: true)
    case (2, false): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 2, tail: false)
    case (2, true): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 2, tail: true)
    case (3, false): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 3, tail: false)
    case (3, true): peeledSweep(state + j, c, rowStride, k, q, v + j, numerator + j, head: false, vectors: 3, tail: true)
    default: break
    }
    j += (m - j) / 8 * 8 + (tail ? 4 : 0)
    stepStateScalarColumns(state, c, m, rowStride, k, q, v, numerator, from: j)
}

/// One sweep over the rows: an optional xmm (4 columns), then `vectors` ymm, then an optional
/// xmm, v and the numerators in registers.
@inline(__always)
private func peeledSweep(
    _ row0: UnsafeMutablePointer<Float>, _ c: Int, _ rowStride: Int, _ k: UnsafePointer<Float>, _ q: UnsafePointer<Float>,
    _ v: UnsafePointer<Float>, _ numerator: UnsafeMutablePointer<Float>, head: Bool, vectors: Int, tail: Bool
) {
    typealias X = SIMD4<Float>
    typealias Y = SIMD8<Float>
    @inline(__always) func loadX(_ p: UnsafePointer<Float>) -> X { UnsafeRawPointer(p).loadUnaligned(as: X.self) }
    @inline(__always) func loadY(_ p: UnsafePointer<Float>) -> Y { UnsafeRawPointer(p).loadUnaligned(as: Y.self) }
    @inline(__always) func store<V: SIMD>(_ x: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: x, as: V.self) }
    let y0 = head ? 4 : 0, t0 = y0 + 8 * vectors
    let vh = head ? loadX(v) : X(), vt = tail ? loadX(v + t0) : X()
    let v0 = vectors > 0 ? loadY(v + y0) : Y(), v1 = vectors > 1 ? loadY(v + y0 + 8) : Y()
    let v2 = vectors > 2 ? loadY(v + y0 + 16) : Y(), v3 = vectors > 3 ? loadY(v + y0 + 24) : Y()
    var nh = X(), nt = X(), n0 = Y(), n1 = Y(), n2 = Y(), n3 = Y()
    var row = row0
    for f in 0..<c {
        let kf = Y(repeating: k[f]), qf = Y(repeating: q[f])
        if head {
            let s = loadX(row).addingProduct(kf.lowHalf, vh)
            store(s, row); nh = nh.addingProduct(qf.lowHalf, s)
        }
        if vectors > 0 {
            let s = loadY(row + y0).addingProduct(kf, v0)
            store(s, row + y0); n0 = n0.addingProduct(qf, s)
        }
        if vectors > 1 {
            let s = loadY(row + y0 + 8).addingProduct(kf, v1)
            store(s, row + y0 + 8); n1 = n1.addingProduct(qf, s)
        }
        if vectors > 2 {
            let s = loadY(row + y0 + 16).addingProduct(kf, v2)
            store(s, row + y0 + 16); n2 = n2.addingProduct(qf, s)
        }
        if vectors > 3 {
            let s = loadY(row + y0 + 24).addingProduct(kf, v3)
            store(s, row + y0 + 24); n3 = n3.addingProduct(qf, s)
        }
        if tail {
            let s = loadX(row + t0).addingProduct(kf.lowHalf, vt)
            store(s, row + t0); nt = nt.addingProduct(qf.lowHalf, s)
        }
        row += rowStride
    }
    if head { store(nh, numerator) }
    if vectors > 0 { store(n0, numerator + y0) }
    if vectors > 1 { store(n1, numerator + y0 + 8) }
    if vectors > 2 { store(n2, numerator + y0 + 16) }
    if vectors > 3 { store(n3, numerator + y0 + 24) }
    if tail { store(nt, numerator + t0) }
}
#endif

@inline(__always)
private func stepStateColumns<L: StateLanes>(
    _: L.Type, _ state: UnsafeMutablePointer<L.T>, _ c: Int, _ m: Int, _ rowStride: Int, _ k: UnsafePointer<L.T>,
    _ q: UnsafePointer<L.T>, _ v: UnsafePointer<L.T>, _ numerator: UnsafeMutablePointer<L.T>
) {
    typealias T = L.T
    let w = L.lanes
    var j = 0
    while j + 4 * w <= m {
        let v0 = L.load(v + j), v1 = L.load(v + j + w), v2 = L.load(v + j + 2 * w), v3 = L.load(v + j + 3 * w)
        var n0 = L.splat(0), n1 = n0, n2 = n0, n3 = n0
        var row = state + j
        for f in 0..<c {
            let kf = L.splat(k[f]), qf = L.splat(q[f])
            let s0 = L.fma(kf, v0, L.load(row)), s1 = L.fma(kf, v1, L.load(row + w))
            let s2 = L.fma(kf, v2, L.load(row + 2 * w)), s3 = L.fma(kf, v3, L.load(row + 3 * w))
            L.store(s0, row); L.store(s1, row + w); L.store(s2, row + 2 * w); L.store(s3, row + 3 * w)
            n0 = L.fma(qf, s0, n0); n1 = L.fma(qf, s1, n1); n2 = L.fma(qf, s2, n2); n3 = L.fma(qf, s3, n3)
            row += rowStride
        }
        L.store(n0, numerator + j); L.store(n1, numerator + j + w)
        L.store(n2, numerator + j + 2 * w); L.store(n3, numerator + j + 3 * w)
        j += 4 * w
    }
    while j + w <= m {
        let v0 = L.load(v + j)
        var n0 = L.splat(0)
        var row = state + j
        for f in 0..<c {
            let s0 = L.fma(L.splat(k[f]), v0, L.load(row))
            L.store(s0, row)
            n0 = L.fma(L.splat(q[f]), s0, n0)
            row += rowStride
        }
        L.store(n0, numerator + j)
        j += w
    }
    stepStateScalarColumns(state, c, m, rowStride, k, q, v, numerator, from: j)
}

/// Columns `from ..< m` one at a time, with the vectors' arithmetic (the tail of every layout).
@inline(__always)
private func stepStateScalarColumns<T: KernelScalar>(
    _ state: UnsafeMutablePointer<T>, _ c: Int, _ m: Int, _ rowStride: Int, _ k: UnsafePointer<T>, _ q: UnsafePointer<T>,
    _ v: UnsafePointer<T>, _ numerator: UnsafeMutablePointer<T>, from first: Int
) {
    for j in first..<Swift.max(first, m) {
        var n: T = 0
        for f in 0..<c {
            let updated = scalarFMA(k[f], v[j], state[f * rowStride + j])
            state[f * rowStride + j] = updated
            n = scalarFMA(q[f], updated, n)
        }
        numerator[j] = n
    }
}

/// a · b + c rounded as the vector `fma` rounds it: once where the ISA fuses, else twice.
@inline(__always)
private func scalarFMA<T: KernelScalar>(_ a: T, _ b: T, _ c: T) -> T {
    hasFusedMultiplyAdd ? c.addingProduct(a, b) : a * b + c
}

/// The vector operations of one state sweep: the native vector or the (narrower) sweep vector.
private protocol StateLanes {
    associatedtype T: KernelScalar
    associatedtype V
    static var lanes: Int { get }
    static func load(_ p: UnsafePointer<T>) -> V
    static func store(_ v: V, _ p: UnsafeMutablePointer<T>)
    static func splat(_ x: T) -> V
    static func fma(_ a: V, _ b: V, _ c: V) -> V
}

private enum NativeLanes<T: KernelScalar>: StateLanes {
    @inline(__always) static var lanes: Int { T.lanes }
    @inline(__always) static func load(_ p: UnsafePointer<T>) -> T.Vector { T.load(p) }
    @inline(__always) static func store(_ v: T.Vector, _ p: UnsafeMutablePointer<T>) { T.store(v, p) }
    @inline(__always) static func splat(_ x: T) -> T.Vector { T.splat(x) }
    @inline(__always) static func fma(_ a: T.Vector, _ b: T.Vector, _ c: T.Vector) -> T.Vector { T.fma(a, b, c) }
}

private enum SweepLanes<T: KernelScalar>: StateLanes {
    @inline(__always) static var lanes: Int { T.SweepVector.scalarCount }
    @inline(__always) static func load(_ p: UnsafePointer<T>) -> T.SweepVector {
        UnsafeRawPointer(p).loadUnaligned(as: T.SweepVector.self)
    }
    @inline(__always) static func store(_ v: T.SweepVector, _ p: UnsafeMutablePointer<T>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: T.SweepVector.self)
    }
    @inline(__always) static func splat(_ x: T) -> T.SweepVector { T.SweepVector(repeating: x) }
    /// Rounded as `T.fma` rounds: once where the ISA fuses, else twice.
    @inline(__always) static func fma(_ a: T.SweepVector, _ b: T.SweepVector, _ c: T.SweepVector) -> T.SweepVector {
        hasFusedMultiplyAdd ? c.addingProduct(a, b) : a * b + c
    }
}

/// Elements of step scratch: φ(q), φ(k) (C each), v and the numerator (M each).
func linearStepScratchCount(featureDim c: Int, valueDim m: Int) -> ScratchSize {
    2 * ScratchSize(max(c, 1)) + 2 * ScratchSize(max(m, 1))
}
