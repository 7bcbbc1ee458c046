import PerformerKernelInterface

// The few-query forward (decoding with a KV cache): one task = one chunk of keys against up
// to 8 query rows (a few queries of one or more query heads that share a key head), so K and V
// are streamed once for all of them. Per block of 64 keys and per row:
//   s_j = (s · log2 e) q · k_j          dot products vectorized over D
//   m' = max(m, max_j s_j), α = 2^(m − m'), p_j = 2^(s_j − m'), l = α·l + Σ_j p_j
//   o = α·o + Σ_j p_j v_j               vectorized over M, four vectors per pass over the keys
// The running (m, l, o) live in the task's partial record; the combine kernel
// (SoftmaxRowsCombine.swift) merges the records of a row's chunks and normalizes.
// K and V rows are read in place when their columns are contiguous; otherwise each key block
// is first copied into scratch (the slower path for column stride ≠ 1).

/// Most rows (query heads × queries) per task.
let softmaxRowsMaxRows = 8
/// Keys per inner block: a block's scores fit in one scratch row per task row.
let softmaxRowsKeyBlock = 64
/// Scratch rows are padded to a multiple of this (every ISA's vector width divides it).
let softmaxRowsPad = 16

@inline(__always)
func softmaxRowsScratchElements(_ shape: SoftmaxHeadShape) -> ScratchSize {
    let dp = ScratchSize(shape.headDim).roundedUp(to: softmaxRowsPad)
    let mp = ScratchSize(shape.valueDim).roundedUp(to: softmaxRowsPad)
    return softmaxRowsMaxRows * (dp + softmaxRowsKeyBlock) + softmaxRowsKeyBlock * (dp + mp)
}

func softmaxForwardRows<T: KernelScalar>(_ task: UnsafePointer<SoftmaxRowsTask>, _: T.Type) {
    let t = task.pointee
    let d = t.shape.headDim, mDim = t.shape.valueDim
    let w = T.lanes
    let dp = roundUp(d, softmaxRowsPad), mp = roundUp(mDim, softmaxRowsPad)
    let blockKeys = softmaxRowsKeyBlock
    let rows = t.headCount * t.rowCount

    // Scratch (elements of T): scaled query rows 8 × dp | scores 8 × 64 | packed K 64 × dp | packed V 64 × mp.
    let queryRows = t.scratch.assumingMemoryBound(to: T.self)
    let scores = queryRows + softmaxRowsMaxRows * dp
    let keyPack = scores + softmaxRowsMaxRows * blockKeys
    let valuePack = keyPack + blockKeys * dp
    let recordStride = mDim + 2
    let records = t.partial.assumingMemoryBound(to: T.self)

    /// End of the keys row r sees in this chunk (start: keyStart).
    @inline(__always) func end(_ r: Int) -> Int {
        Swift.min(t.keyEnd, t.masking.visibleKeys(row: t.rowStart + r % t.rowCount, keyCount: t.shape.keyCount))
    }
    var chunkEnd = t.keyStart
    for r in 0..<rows { chunkEnd = Swift.max(chunkEnd, end(r)) }

    // Query rows pre-scaled into log2 units; empty records.
    let q = t.query.base.assumingMemoryBound(to: T.self)
    let qScale = T(t.scale) * T.log2e
    for r in 0..<rows {
        let source = q + (r / t.rowCount) * t.queryHeadStep + (t.rowStart + r % t.rowCount) * t.query.rowStride
        let row = queryRows + r * dp
        for c in 0..<d { row[c] = source[c * t.query.columnStride] * qScale }
        let record = records + r * recordStride
        record[0] = -T.infinity
        record[1] = 0
        for c in 0..<mDim { record[2 + c] = 0 }
    }

    let k = UnsafePointer(t.key.base.assumingMemoryBound(to: T.self))
    let v = UnsafePointer(t.value.base.assumingMemoryBound(to: T.self))
    var keyStart = t.keyStart
    while keyStart < chunkEnd {
        let bc = Swift.min(blockKeys, chunkEnd - keyStart)
        var keyRows = k + keyStart * t.key.rowStride, keyRowStride = t.key.rowStride
        if t.key.columnStride != 1 {
            for j in 0..<bc {
                for c in 0..<d { keyPack[j * dp + c] = keyRows[j * t.key.rowStride + c * t.key.columnStride] }
            }
            keyRows = UnsafePointer(keyPack)
            keyRowStride = dp
        }
        var valueRows = v + keyStart * t.value.rowStride, valueRowStride = t.value.rowStride
        if t.value.columnStride != 1 {
            for j in 0..<bc {
                for c in 0..<mDim { valuePack[j * mp + c] = valueRows[j * t.value.rowStride + c * t.value.columnStride] }
            }
            valueRows = UnsafePointer(valuePack)
            valueRowStride = mp
        }
        for r in 0..<rows {
            let visible = Swift.min(bc, end(r) - keyStart)
            if visible <= 0 { continue }
            let s = scores + r * blockKeys
            let queryRow = UnsafePointer(queryRows + r * dp)
            for j in 0..<visible { s[j] = rowDot(queryRow, keyRows + j * keyRowStride, d) }
            let padded = roundUp(visible, w)
            for j in visible..<padded { s[j] = -T.infinity }
            var maxVector = T.load(s)
            var j = w
            while j < padded { maxVector = T.max(maxVector, T.load(s + j)); j += w }
            let record = records + r * recordStride
            let oldMax = record[0]
            let newMax = Swift.max(oldMax, T.maxAcross(maxVector))
            let alpha = T.exp2(T.splat(oldMax - newMax))[0]
            let shift = T.splat(newMax)
            var sum = T.splat(0)
            j = 0
            while j < padded {
                let e = T.exp2(T.sub(T.load(s + j), shift))
                T.store(e, s + j)
                sum = T.add(sum, e)
                j += w
            }
            record[0] = newMax
            record[1] = record[1] * alpha + T.sumAcross(sum)
            accumulateWeightedRows(record + 2, alpha: alpha, weights: UnsafePointer(s), count: visible,
                                   rows: valueRows, rowStride: valueRowStride, width: mDim)
        }
        keyStart += bc
    }
}

/// o = α·o + Σ_{j < count} weights[j] · rows[j] over `width` elements (o contiguous; row j at
/// rows + j·rowStride, contiguous), four vectors per pass over the rows, even and odd rows
/// summed apart and added at the end.
@inline(__always)
func accumulateWeightedRows<T: KernelScalar>(
    _ o: UnsafeMutablePointer<T>, alpha: T, weights: UnsafePointer<T>, count: Int,
    rows: UnsafePointer<T>, rowStride: Int, width: Int
) {
    let w = T.lanes
    let a = T.splat(alpha)
    var c = 0
    while c + 4 * w <= width {
        var x0 = T.mul(T.load(o + c), a), x1 = T.mul(T.load(o + c + w), a)
        var x2 = T.mul(T.load(o + c + 2 * w), a), x3 = T.mul(T.load(o + c + 3 * w), a)
        // Even and odd keys in separate accumulators: eight independent FMA chains.
        var y0 = T.splat(0), y1 = T.splat(0), y2 = T.splat(0), y3 = T.splat(0)
        var row = rows + c
        var j = 0
        while j + 2 <= count {
            let p = T.splat(weights[j]), p1 = T.splat(weights[j + 1])
            let next = row + rowStride
            x0 = T.fma(p, T.load(row), x0)
            x1 = T.fma(p, T.load(row + w), x1)
            x2 = T.fma(p, T.load(row + 2 * w), x2)
            x3 = T.fma(p, T.load(row + 3 * w), x3)
            y0 = T.fma(p1, T.load(next), y0)
            y1 = T.fma(p1, T.load(next + w), y1)
            y2 = T.fma(p1, T.load(next + 2 * w), y2)
            y3 = T.fma(p1, T.load(next + 3 * w), y3)
            row += 2 * rowStride
            j += 2
        }
        if j < count {
            let p = T.splat(weights[j])
            x0 = T.fma(p, T.load(row), x0)
            x1 = T.fma(p, T.load(row + w), x1)
            x2 = T.fma(p, T.load(row + 2 * w), x2)
            x3 = T.fma(p, T.load(row + 3 * w), x3)
        }
        T.store(T.add(x0, y0), o + c); T.store(T.add(x1, y1), o + c + w)
        T.store(T.add(x2, y2), o + c + 2 * w); T.store(T.add(x3, y3), o + c + 3 * w)
        c += 4 * w
    }
    while c + w <= width {
        var x = T.mul(T.load(o + c), a)
        var row = rows + c
        for j in 0..<count {
            x = T.fma(T.splat(weights[j]), T.load(row), x)
            row += rowStride
        }
        T.store(x, o + c)
        c += w
    }
    while c < width {
        var x = o[c] * alpha
        for j in 0..<count { x += weights[j] * rows[j * rowStride + c] }
        o[c] = x
        c += 1
    }
}

func makeSoftmaxRowKernels() -> SoftmaxRowKernels {
    SoftmaxRowKernels(
        maxRows: softmaxRowsMaxRows,
        scratchBytes: { shape, elementSize in (softmaxRowsScratchElements(shape) * elementSize).value },
        rowsFloat: { softmaxForwardRows($0, Float.self) },
        rowsDouble: { softmaxForwardRows($0, Double.self) },
        combineFloat: { softmaxCombineRows($0, Float.self) },
        combineDouble: { softmaxCombineRows($0, Double.self) })
}
