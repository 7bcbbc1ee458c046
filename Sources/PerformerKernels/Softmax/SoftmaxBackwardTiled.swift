import PerformerKernelInterface

// Tiled recomputing backward (FlashAttention-2 order) built on the micro-kernel.
//
// The unit of work is a (query block of ≤ 96 rows) × (key block of ≤ 64 keys) pair; keys are
// the vector lanes, queries the micro-kernel rows. With Kᵀ, K and Vᵀ of the key block packed,
// Q̂ = Q·(s·log2 e) packed once per head (rounded exactly as the forward rounds it, so S is
// bit-identical to the forward's scores: P then matches the forward's P up to a per-row
// factor, which keeps Σ_j dS_ij = 0 to rounding even when scores are large), and Q, dO read
// through their strides:
//   S  = Q̂·Kᵀ,  P = 2^(S − lse_i·log2 e) (0 where masked),  dP = dO·Vᵀ,
//   dS = s · P ∘ (dP − δ_i)
//   key gradients:   dVᵀ += dOᵀ·P,  dKᵀ += Qᵀ·dS        (A = dO, Q read transposed)
//   query gradient:  dQ  += dS·K
// The key pass runs every pair of its key blocks (summing over the group's query heads); when
// fused (one task per key head, covering every key) it also accumulates dQ of each query head
// in an N × D scratch: five products per pair. Otherwise a query pass recomputes S, P, dP for
// its query block (three products) so that no two tasks write the same dQ.

/// Keys per backward key block (vector lanes; a multiple of every tile width ≤ 32).
let backwardKeyBlock = 64
/// Query rows per backward block (micro-kernel rows; a multiple of 24).
let backwardQueryBlock = 96
/// Key blocks the key pass keeps packed while it sweeps the queries once: each query block's
/// Q̂, Q, dO and dQ rows are then reused by this many key blocks from cache instead of being
/// streamed once per key block. Key-pass tasks that do not cover all keys cover a multiple of
/// this many blocks (`keyRowBlock`), so every thread count gives the same sweeps, bit for bit.
let backwardKeySweep = 4

/// Scratch elements of a backward task: packs, pair buffers, dK/dV accumulators for
/// `keyRows` keys (twice: the group's total and one query head's own), a dQ accumulator (N rows when fused, one query block otherwise) and the
/// scaled Q̂ of one head (N × D).
@inline(__always)
func softmaxBackwardScratchElements(_ shape: SoftmaxHeadShape, keyRows: Int, fused: Bool) -> ScratchSize {
    let d = ScratchSize(shape.headDim), m = ScratchSize(shape.valueDim)
    let paddedD = d.roundedUp(to: 32)
    let blocks = ScratchSize(keyRows).roundedUp(to: backwardKeyBlock).value / backwardKeyBlock
    let packs = backwardKeySweep * ((d + m) * backwardKeyBlock + backwardKeyBlock * paddedD)
    let pair = ScratchSize(2 * backwardQueryBlock * backwardKeyBlock)
    let accumulators = 2 * blocks * (d + m) * backwardKeyBlock
    let queryAccumulator = (fused ? Swift.max(shape.queryCount, backwardQueryBlock) : backwardQueryBlock) * paddedD
    return packs + pair + accumulators + queryAccumulator + Swift.max(shape.queryCount, 1) * d
}

/// The scratch of one backward task, carved from `SoftmaxBackwardTask.scratch`.
struct BackwardBuffers<T: KernelScalar> {
    var kT: UnsafeMutablePointer<T>       // D × 64        } one key block: slot 0 of
    var vT: UnsafeMutablePointer<T>       // M × 64        } `backwardKeySweep` slots,
    var kRows: UnsafeMutablePointer<T>    // 64 × paddedD  } `packStride` apart
    var packStride: Int
    var p: UnsafeMutablePointer<T>        // 96 × 64: S, then P
    var dS: UnsafeMutablePointer<T>       // 96 × 64: dP, then dS
    var dK: UnsafeMutablePointer<T>       // blocks × D × 64
    var dV: UnsafeMutablePointer<T>       // blocks × M × 64
    var headDK: UnsafeMutablePointer<T>   // blocks × (D + M) × 64: dK, dV of query head g ≥ 1
    var dQ: UnsafeMutablePointer<T>       // rows × paddedD
    var qScaled: UnsafeMutablePointer<T>  // N × D: Q̂ = Q · s·log2 e, rows contiguous
    var paddedD: Int

    /// The layout `softmaxBackwardScratchElements(shape, keyRows:, fused:)` sized.
    init(_ scratch: UnsafeMutableRawPointer, shape: SoftmaxHeadShape, keyRows: Int, fused: Bool) {
        let d = shape.headDim, m = shape.valueDim
        paddedD = roundUp(d, microKernelColumns(T.self))
        let blocks = (keyRows + backwardKeyBlock - 1) / backwardKeyBlock
        packStride = (d + m) * backwardKeyBlock + backwardKeyBlock * roundUp(d, 32)
        kT = scratch.assumingMemoryBound(to: T.self)
        vT = kT + d * backwardKeyBlock
        kRows = vT + m * backwardKeyBlock
        p = kT + backwardKeySweep * packStride
        dS = p + backwardQueryBlock * backwardKeyBlock
        dK = dS + backwardQueryBlock * backwardKeyBlock
        dV = dK + blocks * d * backwardKeyBlock
        headDK = dV + blocks * m * backwardKeyBlock
        dQ = headDK + blocks * (d + m) * backwardKeyBlock
        qScaled = dQ + (fused ? Swift.max(shape.queryCount, backwardQueryBlock) : backwardQueryBlock) * roundUp(d, 32)
    }

    /// The same buffers with the key-block packs of slot `s` (< backwardKeySweep).
    func slot(_ s: Int) -> BackwardBuffers {
        var moved = self
        moved.kT += s * packStride
        moved.vT += s * packStride
        moved.kRows += s * packStride
        return moved
    }
}

/// One query head's operands (head g of the task's group).
struct BackwardHead<T: KernelScalar> {
    var q: UnsafePointer<T>, qRow: Int, qColumn: Int
    var dO: UnsafePointer<T>, dORow: Int, dOColumn: Int
    var lse: UnsafePointer<T>, lseStride: Int
    var delta: UnsafePointer<T>
    var dQ: UnsafeMutablePointer<T>, dQRow: Int, dQColumn: Int

    init(_ t: SoftmaxBackwardTask, group g: Int) {
        q = UnsafePointer(t.query.base.assumingMemoryBound(to: T.self)) + g * t.queryHeadStep
        (qRow, qColumn) = (t.query.rowStride, t.query.columnStride)
        dO = UnsafePointer(t.outputGradient.base.assumingMemoryBound(to: T.self)) + g * t.outputGradientHeadStep
        (dORow, dOColumn) = (t.outputGradient.rowStride, t.outputGradient.columnStride)
        lse = UnsafePointer(t.logSumExp.assumingMemoryBound(to: T.self)) + g * t.logSumExpHeadStep
        lseStride = t.logSumExpStride
        delta = UnsafePointer(t.delta.assumingMemoryBound(to: T.self)) + g * t.deltaHeadStep
        dQ = t.queryGradient.base.assumingMemoryBound(to: T.self) + g * t.queryGradientHeadStep
        (dQRow, dQColumn) = (t.queryGradient.rowStride, t.queryGradient.columnStride)
    }
}

/// Q̂ rows `rowStart ..< rowStart + rows` of `head` into `buffers.qScaled` (same rows), scaled by
/// s·log2 e exactly as the forward scales its Qᵀ.
@inline(__always)
func packScaledQuery<T: KernelScalar>(
    _ t: SoftmaxBackwardTask, _ head: BackwardHead<T>, _ buffers: BackwardBuffers<T>, rowStart: Int, rows: Int
) {
    let d = t.shape.headDim
    let scoreScale = T(t.scale) * T.log2e
    for i in rowStart..<(rowStart + rows) {
        let source = head.q + i * head.qRow
        let target = buffers.qScaled + i * d
        for x in 0..<d { target[x] = source[x * head.qColumn] * scoreScale }
    }
}

/// Packs keys `keyStart ..< keyStart + keys` into Kᵀ, Vᵀ and (when `rows`) K, with padded
/// lanes zero.
@inline(__always)
func packKeyBlock<T: KernelScalar>(
    _ t: SoftmaxBackwardTask, _ buffers: BackwardBuffers<T>, keyStart: Int, keys: Int, rows: Bool
) {
    let d = t.shape.headDim, m = t.shape.valueDim
    let k = t.key.base.assumingMemoryBound(to: T.self) + keyStart * t.key.rowStride
    let v = t.value.base.assumingMemoryBound(to: T.self) + keyStart * t.value.rowStride
    // backwardPair reads the lanes up to `keys` rounded to the micro-kernel width, no further:
    // a block of a few keys (a tiny call) zeroes those, not all 64.
    let lanes = roundUp(keys, microKernelColumns(T.self))
    for x in 0..<d {
        let row = buffers.kT + x * backwardKeyBlock
        let column = k + x * t.key.columnStride
        for j in 0..<keys { row[j] = column[j * t.key.rowStride] }
        for j in keys..<lanes { row[j] = 0 }
    }
    for y in 0..<m {
        let row = buffers.vT + y * backwardKeyBlock
        let column = v + y * t.value.columnStride
        for j in 0..<keys { row[j] = column[j * t.value.rowStride] }
        for j in keys..<lanes { row[j] = 0 }
    }
    if rows {
        for j in 0..<keys {
            let row = buffers.kRows + j * buffers.paddedD
            let source = k + j * t.key.rowStride
            for x in 0..<d { row[x] = source[x * t.key.columnStride] }
            for x in d..<buffers.paddedD { row[x] = 0 }
        }
    }
}

/// One (query block) × (key block) pair of head `head`; see the file comment.
/// `dK`, `dV`: this key block's accumulators (nil in the query pass); `dQ`: the accumulator
/// row of query `queryStart` (nil when dQ is not wanted).
@inline(__always)
func backwardPair<T: KernelScalar>(
    _ t: SoftmaxBackwardTask, _ head: BackwardHead<T>, _ buffers: BackwardBuffers<T>,
    queryStart: Int, queries: Int, keyStart: Int, keys: Int,
    dK: UnsafeMutablePointer<T>?, dV: UnsafeMutablePointer<T>?, dQ: UnsafeMutablePointer<T>?,
    laneIndex: T.Vector
) {
    let d = t.shape.headDim, m = t.shape.valueDim
    let w = T.lanes
    let lanes = roundUp(keys, microKernelColumns(T.self))
    let stride = backwardKeyBlock
    let q = head.q + queryStart * head.qRow
    let dO = head.dO + queryStart * head.dORow
    blockProduct(rows: queries, columns: lanes, depth: d,
                 a: UnsafePointer(buffers.qScaled + queryStart * d), aRowStride: d, aDepthStride: 1,
                 b: UnsafePointer(buffers.kT), bRowStride: stride, c: buffers.p, cRowStride: stride, accumulate: false)
    blockProduct(rows: queries, columns: lanes, depth: m, a: dO, aRowStride: head.dORow, aDepthStride: head.dOColumn,
                 b: UnsafePointer(buffers.vT), bRowStride: stride, c: buffers.dS, cRowStride: stride, accumulate: false)
    let scale = T.splat(T(t.scale))
    let zero = T.splat(0), one = T.splat(1)
    for i in 0..<queries {
        let row = queryStart + i
        let lse2 = head.lse[row * head.lseStride] * T.log2e
        let visible = t.masking.visibleKeys(row: row, keyCount: t.shape.keyCount)
        let valid = lse2.isFinite ? Swift.min(Swift.max(visible - keyStart, 0), keys) : 0
        let shift = T.splat(lse2.isFinite ? lse2 : 0)
        let delta = T.splat(head.delta[row])
        let pRow = buffers.p + i * stride, dSRow = buffers.dS + i * stride
        // P ≤ 1 as in exact arithmetic: lse = m + log l is rounded to ulp(lse), and at |s| ~ 1e9
        // (float32) / 1e19 (float64) that ulp exceeds log l, so 2^(S − lse) reached 2^ulp and
        // dV overflowed. Rows with |lse₂| ≥ 2¹⁶ (ulp ≥ 2⁻⁷ in float32) clamp P to 1, so
        // |dV_j| ≤ Σ_i |dO_i| always; the others (every ordinary row) run the loop as before.
        let clamp = !(Swift.abs(lse2) < T(0x1p16))
        var lane = 0
        if clamp {
            while lane < lanes {
                let e = T.exp2(T.sub(T.load(pRow + lane), shift))
                var p = T.selectLess(one, e, one, e)
                if lane + w > valid {
                    p = T.selectLess(laneIndex, T.splat(T(valid - lane)), p, zero)
                }
                T.store(p, pRow + lane)
                T.store(T.mul(T.mul(p, T.sub(T.load(dSRow + lane), delta)), scale), dSRow + lane)
                lane += w
            }
        } else {
            // S − lse₂ ≤ 0 up to lse's rounding (< 2⁻⁷ here): the non-positive exp2.
            while lane < lanes {
                var p = T.exp2NonPositive(T.sub(T.load(pRow + lane), shift))
                if lane + w > valid {
                    p = T.selectLess(laneIndex, T.splat(T(valid - lane)), p, zero)
                }
                T.store(p, pRow + lane)
                T.store(T.mul(T.mul(p, T.sub(T.load(dSRow + lane), delta)), scale), dSRow + lane)
                lane += w
            }
        }
    }
    if let dV, let dK {
        blockProduct(rows: m, columns: lanes, depth: queries, a: dO, aRowStride: head.dOColumn, aDepthStride: head.dORow,
                     b: UnsafePointer(buffers.p), bRowStride: stride, c: dV, cRowStride: stride, accumulate: true)
        blockProduct(rows: d, columns: lanes, depth: queries, a: q, aRowStride: head.qColumn, aDepthStride: head.qRow,
                     b: UnsafePointer(buffers.dS), bRowStride: stride, c: dK, cRowStride: stride, accumulate: true)
    }
    if let dQ {
        blockProduct(rows: queries, columns: buffers.paddedD, depth: keys,
                     a: UnsafePointer(buffers.dS), aRowStride: stride, aDepthStride: 1,
                     b: UnsafePointer(buffers.kRows), bRowStride: buffers.paddedD,
                     c: dQ, cRowStride: buffers.paddedD, accumulate: true)
    }
}

@inline(__always)
func laneIndexVector<T: KernelScalar>(_: T.Type) -> T.Vector {
    var index = T.splat(0)
    for x in 0..<T.lanes { index[x] = T(x) }
    return index
}

/// Writes `rows` rows of a rows × paddedD accumulator to dQ rows `rowStart ...` of `head`.
@inline(__always)
func storeQueryGradient<T: KernelScalar>(
    _ head: BackwardHead<T>, _ accumulator: UnsafeMutablePointer<T>, rowStart: Int, rows: Int, d: Int, paddedD: Int
) {
    for i in 0..<rows {
        let target = head.dQ + (rowStart + i) * head.dQRow
        let source = accumulator + i * paddedD
        for x in 0..<d { target[x * head.dQColumn] = source[x] }
    }
}

/// The first query row that sees key `key` (0 without a causal mask).
@inline(__always)
func firstVisibleQuery(_ t: SoftmaxBackwardTask, key: Int) -> Int {
    t.masking.causal ? Swift.max(0, key - t.masking.causalOffset) : 0
}

/// Zeroes the dK, dV accumulators of `keyCount` keys (blocks × D × 64, then blocks × M × 64)
/// where the key pass accumulates and reads them: whole blocks, and in a last block of fewer
/// keys the lanes up to its count rounded to the micro-kernel width (what backwardPair writes
/// and the key pass reads). The same results; a tiny call no longer clears 64 lanes per row.
@inline(__always)
func zeroKeyAccumulators<T: KernelScalar>(_ dK: UnsafeMutablePointer<T>, keyCount: Int, d: Int, m: Int) {
    let blocks = (keyCount + backwardKeyBlock - 1) / backwardKeyBlock
    guard blocks > 0 else { return }
    let lanes = roundUp(keyCount - (blocks - 1) * backwardKeyBlock, microKernelColumns(T.self))
    zeroAccumulatorBlocks(dK, blocks: blocks, rows: d, lastLanes: lanes)
    zeroAccumulatorBlocks(dK + blocks * d * backwardKeyBlock, blocks: blocks, rows: m, lastLanes: lanes)
}

/// `blocks` blocks of rows × 64 accumulators: all of the first blocks − 1, `lastLanes` per row of the last.
@inline(__always)
func zeroAccumulatorBlocks<T: KernelScalar>(_ part: UnsafeMutablePointer<T>, blocks: Int, rows: Int, lastLanes: Int) {
    let full = (blocks - 1) * rows * backwardKeyBlock
    for x in 0..<full { part[x] = 0 }
    for r in 0..<rows {
        let row = part + full + r * backwardKeyBlock
        for j in 0..<lastLanes { row[j] = 0 }
    }
}

/// Key pass: dK, dV for keys `rowStart ..< rowStart + rowCount` (and dQ when fused).
func softmaxBackwardKeys<T: KernelScalar>(_ task: UnsafePointer<SoftmaxBackwardTask>, _: T.Type) {
    let t = task.pointee
    // A few queries × keys: the same bits without packing and padded tiles (SoftmaxBackwardSmall.swift).
    if takesSmallBackward(t) { return softmaxBackwardSmall(t, T.self) }
    let d = t.shape.headDim, m = t.shape.valueDim, n = t.shape.queryCount
    let buffers = BackwardBuffers<T>(t.scratch, shape: t.shape, keyRows: t.rowCount, fused: t.fusedQueryGradient)
    let blocks = (t.rowCount + backwardKeyBlock - 1) / backwardKeyBlock
    let accumulatorCount = blocks * (d + m) * backwardKeyBlock
    zeroKeyAccumulators(buffers.dK, keyCount: t.rowCount, d: d, m: m)
    let laneIndex = laneIndexVector(T.self)
    let fused = t.fusedQueryGradient
    for g in 0..<t.groupSize {
        let head = BackwardHead<T>(t, group: g)
        // Head g ≥ 1 sums its dK, dV from zero and adds them to the group's total once done:
        // the same additions, in the same order, as one task per query head whose dK, dV are
        // added up afterwards (SoftmaxAttention.backward picks either layout).
        let dK = g == 0 ? buffers.dK : buffers.headDK, dV = dK + blocks * d * backwardKeyBlock
        if g > 0 { zeroKeyAccumulators(dK, keyCount: t.rowCount, d: d, m: m) }
        if fused { for x in 0..<(n * buffers.paddedD) { buffers.dQ[x] = 0 } }
        packScaledQuery(t, head, buffers, rowStart: 0, rows: n)
        var sweepStart = 0
        while sweepStart < blocks {
            // Pack the sweep's key blocks that some query sees. Visibility is monotone in the row
            // and in the key, so those blocks are a prefix of the sweep: slot s holds block
            // sweepStart + s, and the sweep's queries begin at its first block's first query.
            var used = 0
            while used < backwardKeySweep && sweepStart + used < blocks {
                let keyStart = t.rowStart + (sweepStart + used) * backwardKeyBlock
                guard keyStart < t.masking.keyLimit, firstVisibleQuery(t, key: keyStart) < n else { break }
                let keys = Swift.min(backwardKeyBlock, t.rowStart + t.rowCount - keyStart)
                packKeyBlock(t, buffers.slot(used), keyStart: keyStart, keys: keys, rows: fused)
                used += 1
            }
            guard used > 0 else { break }
            var queryStart = firstVisibleQuery(t, key: t.rowStart + sweepStart * backwardKeyBlock)
            while queryStart < n {
                let queryEnd = Swift.min(queryStart + backwardQueryBlock, n)
                for slot in 0..<used {
                    let block = sweepStart + slot
                    let keyStart = t.rowStart + block * backwardKeyBlock
                    let keys = Swift.min(backwardKeyBlock, t.rowStart + t.rowCount - keyStart)
                    // Rows before the block's first visible query see none of its keys: clip them.
                    let pairStart = Swift.max(queryStart, firstVisibleQuery(t, key: keyStart))
                    guard pairStart < queryEnd else { continue }
                    backwardPair(t, head, buffers.slot(slot), queryStart: pairStart, queries: queryEnd - pairStart,
                                 keyStart: keyStart, keys: keys,
                                 dK: dK + block * d * backwardKeyBlock, dV: dV + block * m * backwardKeyBlock,
                                 dQ: fused ? buffers.dQ + pairStart * buffers.paddedD : nil, laneIndex: laneIndex)
                }
                queryStart = queryEnd
            }
            sweepStart += backwardKeySweep
        }
        if fused { storeQueryGradient(head, buffers.dQ, rowStart: 0, rows: n, d: d, paddedD: buffers.paddedD) }
        if g > 0 { rowAdd(dK, buffers.dK, accumulatorCount) }
    }
    let dKOut = t.keyGradient.base.assumingMemoryBound(to: T.self)
    let dVOut = t.valueGradient.base.assumingMemoryBound(to: T.self)
    for j in 0..<t.rowCount {
        let (block, lane) = (j / backwardKeyBlock, j % backwardKeyBlock)
        let key = t.rowStart + j
        let dK = buffers.dK + block * d * backwardKeyBlock + lane
        let dV = buffers.dV + block * m * backwardKeyBlock + lane
        for x in 0..<d { dKOut[key * t.keyGradient.rowStride + x * t.keyGradient.columnStride] = dK[x * backwardKeyBlock] }
        for y in 0..<m { dVOut[key * t.valueGradient.rowStride + y * t.valueGradient.columnStride] = dV[y * backwardKeyBlock] }
    }
}

/// Query pass: dQ for query rows `rowStart ..< rowStart + rowCount` (≤ 96) of one head.
func softmaxBackwardQueries<T: KernelScalar>(_ task: UnsafePointer<SoftmaxBackwardTask>, _: T.Type) {
    let t = task.pointee
    let d = t.shape.headDim
    let buffers = BackwardBuffers<T>(t.scratch, shape: t.shape, keyRows: 0, fused: false)
    let head = BackwardHead<T>(t, group: 0)
    let laneIndex = laneIndexVector(T.self)
    var rowStart = t.rowStart
    let rowEnd = t.rowStart + t.rowCount
    while rowStart < rowEnd {
        let queries = Swift.min(backwardQueryBlock, rowEnd - rowStart)
        for x in 0..<(queries * buffers.paddedD) { buffers.dQ[x] = 0 }
        packScaledQuery(t, head, buffers, rowStart: rowStart, rows: queries)
        let keyEnd = t.masking.visibleKeys(row: rowStart + queries - 1, keyCount: t.shape.keyCount)
        var keyStart = 0
        while keyStart < keyEnd {
            let keys = Swift.min(backwardKeyBlock, keyEnd - keyStart)
            packKeyBlock(t, buffers, keyStart: keyStart, keys: keys, rows: true)
            backwardPair(t, head, buffers, queryStart: rowStart, queries: queries, keyStart: keyStart, keys: keys,
                         dK: nil, dV: nil, dQ: buffers.dQ, laneIndex: laneIndex)
            keyStart += keys
        }
        storeQueryGradient(head, buffers.dQ, rowStart: rowStart, rows: queries, d: d, paddedD: buffers.paddedD)
        rowStart += queries
    }
}

/// delta[i] = Σ_c a[i][c] · b[i][c] for i < rows (δ = rowsum(dO ∘ O)), each row summed in
/// column order with `T.fma` from 0 — exactly the micro-kernel's operation sequence for
/// dP = dO·Vᵀ. So where O_i = V_j bit for bit (a row that sees a single key) δ_i = dP_ij
/// exactly and dS_ij = 0, as in exact arithmetic. Rows go `lanes` at a time in vector lanes.
func softmaxRowDots<T: KernelScalar>(
    _ a: StridedMatrix, _ b: StridedMatrix, rows: Int, columns: Int, into delta: UnsafeMutableRawPointer, _: T.Type
) {
    let x = UnsafePointer(a.base.assumingMemoryBound(to: T.self))
    let y = UnsafePointer(b.base.assumingMemoryBound(to: T.self))
    let out = delta.assumingMemoryBound(to: T.self)
    let w = T.lanes
    var first = 0
    // Whole groups of `w` rows, one row per lane (lanes are filled element by element).
    while first + w <= rows {
        let count = w
        var sum = T.splat(0)
        for c in 0..<columns {
            var xs = T.splat(0), ys = T.splat(0)
            for r in 0..<count {
                xs[r] = x[(first + r) * a.rowStride + c * a.columnStride]
                ys[r] = y[(first + r) * b.rowStride + c * b.columnStride]
            }
            sum = T.fma(xs, ys, sum)
        }
        for r in 0..<count { out[first + r] = sum[r] }
        first += w
    }
    // The last rows (all of them in a decode step, 1 row per head) one at a time: the same
    // lane operations on broadcast values, so the same bits as a lane of the loop above, without
    // filling lanes one by one (a tenth of a tiny backward's instructions).
    while first < rows {
        var sum = T.splat(0)
        let xr = x + first * a.rowStride, yr = y + first * b.rowStride
        for c in 0..<columns {
            sum = T.fma(T.splat(xr[c * a.columnStride]), T.splat(yr[c * b.columnStride]), sum)
        }
        out[first] = sum[0]
        first += 1
    }
}

func makeSoftmaxBackwardKernels() -> SoftmaxBackwardKernels {
    SoftmaxBackwardKernels(
        queryRowBlock: backwardQueryBlock, keyRowBlock: backwardKeySweep * backwardKeyBlock,
        scratchBytes: { shape, elementSize, keyRows, fused in
            (softmaxBackwardScratchElements(shape, keyRows: keyRows, fused: fused) * elementSize).value
        },
        queryFloat: { softmaxBackwardQueries($0, Float.self) },
        queryDouble: { softmaxBackwardQueries($0, Double.self) },
        keyFloat: { softmaxBackwardKeys($0, Float.self) },
        keyDouble: { softmaxBackwardKeys($0, Double.self) },
        deltaFloat: { softmaxRowDots($0, $1, rows: $2, columns: $3, into: $4, Float.self) },
        deltaDouble: { softmaxRowDots($0, $1, rows: $2, columns: $3, into: $4, Double.self) })
}
