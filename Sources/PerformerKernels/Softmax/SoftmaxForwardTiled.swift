#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

// Tiled online-softmax forward (FlashAttention-2 order) built on the micro-kernel.
//
// One task = one block of ≤ 64 query rows of one head. Scores are computed transposed,
// Sᵀ = K·Qᵀ (keys × queries), so each query is a vector lane and the running max, sum and
// rescale are vertical vector operations. Scores are kept in log2 units (Q is pre-scaled by
// scale · log2 e) so probabilities are exp2 (of arguments ≤ 0: exp2NonPositive). Per key block of 144 keys:
//   Sᵀ = K·Qᵀ                (A = K read through its strides, B = packed Qᵀ)
//   m' = max(m, colmax Sᵀ), α = 2^(m − m'), Pᵀ = 2^(Sᵀ − m'), l = α·l + colsum Pᵀ
//   Oᵀ = α ∘ Oᵀ + Vᵀ·Pᵀ      (A(m, j) = V[j][m] through V's strides, B = Pᵀ)
// Key blocks no query of the task sees are skipped; only blocks cut by the causal diagonal
// or the key limit are masked. Within a key block each vector of query lanes gets only the
// key rows one of its lanes sees (on a causal diagonal the upper triangle is mostly skipped):
// Sᵀ rows past a vector's last visible key are neither computed, masked nor exponentiated
// (their Pᵀ is written 0 up to the last row its two-vector P·V tile reads), and P·V's depth per
// tile stops at the tile's last visible key. The skipped terms were exact zeros (masked
// scores), so every computed value keeps its bits.
// Scratch per task: (D + 144 + M + 4) × 64 elements + 3 × 64 Ints.

@inline(__always)
func softmaxForwardScratchElements(_ shape: SoftmaxHeadShape) -> ScratchSize {
    (ScratchSize(shape.headDim) + softmaxKeyBlock + shape.valueDim + 4) * softmaxQueryBlock
}

func softmaxForwardTiled<T: KernelScalar>(_ task: UnsafePointer<SoftmaxForwardTask>, _: T.Type) {
    let t = task.pointee
    let d = t.shape.headDim, mDim = t.shape.valueDim, keyCount = t.shape.keyCount
    let rowCount = t.rowCount, rowStart = t.rowStart
    let w = T.lanes
    let br = roundUp(rowCount, microKernelColumns(T.self))   // padded query lanes

    // Scratch layout (elements of T): Qᵀ D×br | Sᵀ 144×br | Oᵀ M×br | m | l | α | visible counts
    // as T, then as Int.
    let base = t.scratch.assumingMemoryBound(to: T.self)
    let qT = base
    let sT = qT + d * softmaxQueryBlock
    let oT = sT + softmaxKeyBlock * softmaxQueryBlock
    let rowMax = oT + mDim * softmaxQueryBlock
    let rowSum = rowMax + softmaxQueryBlock
    let alpha = rowSum + softmaxQueryBlock
    let visibleAsScalar = alpha + softmaxQueryBlock
    let visible = UnsafeMutableRawPointer(visibleAsScalar + softmaxQueryBlock).assumingMemoryBound(to: Int.self)
    // Per vector of query lanes (index lane / w): the most and fewest keys one of its real lanes sees.
    let vectorMostVisible = visible + softmaxQueryBlock
    let vectorFewestVisible = vectorMostVisible + softmaxQueryBlock

    // Visible keys per query lane; padded lanes see none (their Qᵀ is 0, results unused).
    var maxVisible = 0
    for i in 0..<br {
        let v = i < rowCount ? t.masking.visibleKeys(row: rowStart + i, keyCount: keyCount) : 0
        visible[i] = v
        visibleAsScalar[i] = T(v)
        if i < rowCount { maxVisible = Swift.max(maxVisible, v) }
    }
    var lane = 0
    while lane < br {
        var most = 0, fewest = Int.max
        for i in lane..<Swift.max(lane, Swift.min(lane + w, rowCount)) {
            most = Swift.max(most, visible[i]); fewest = Swift.min(fewest, visible[i])
        }
        vectorMostVisible[lane / w] = most
        vectorFewestVisible[lane / w] = Swift.min(fewest, most)
        lane += w
    }

    // Qᵀ, pre-scaled into log2 units.
    let q = t.query.base.assumingMemoryBound(to: T.self)
    let qScale = T(t.scale) * T.log2e
    for k in 0..<d {
        let row = qT + k * br
        let column = q + rowStart * t.query.rowStride + k * t.query.columnStride
        for i in 0..<rowCount { row[i] = column[i * t.query.rowStride] * qScale }
        for i in rowCount..<br { row[i] = 0 }
    }
    for i in 0..<br { rowMax[i] = -T.infinity; rowSum[i] = 0 }
    for i in 0..<(mDim * br) { oT[i] = 0 }

    let k = UnsafePointer(t.key.base.assumingMemoryBound(to: T.self))
    let v = UnsafePointer(t.value.base.assumingMemoryBound(to: T.self))
    let negativeLargest = T.splat(-T.greatestFiniteMagnitude)
    // Key indices are exact in T (Float: below 2^24): masks may compare them as T vectors.
    let exactKeyIndices = keyCount < (1 << (T.significandBitCount + 1))
    let tileWidth = microKernelColumns(T.self)
    var keyStart = 0
    while keyStart < maxVisible {
        let bc = Swift.min(softmaxKeyBlock, maxVisible - keyStart)
        // Key rows of this block vector v needs: its lanes' last visible key, within the block.
        @inline(__always) func neededRows(_ v: Int) -> Int { Swift.min(Swift.max(0, vectorMostVisible[v] - keyStart), bc) }
        // Sᵀ = K·Qᵀ, per tile of two lane vectors: the rows both need as two-vector tiles, the
        // rows only one needs as one-vector tiles.
        var tile = 0
        while tile < br {
            let first = tile / w
            let rows0 = neededRows(first), rows1 = neededRows(first + 1)
            let shared = Swift.min(rows0, rows1)
            if shared > 0 {
                blockProduct(
                    rows: shared, columns: tileWidth, depth: d,
                    a: k + keyStart * t.key.rowStride, aRowStride: t.key.rowStride, aDepthStride: t.key.columnStride,
                    b: qT + tile, bRowStride: br, c: sT + tile, cRowStride: br, accumulate: false)
            }
            if rows0 != rows1 {
                let lane = rows0 > rows1 ? tile : tile + w
                singleVectorProduct(
                    rows: Swift.max(rows0, rows1) - shared, depth: d,
                    a: k + (keyStart + shared) * t.key.rowStride, aRowStride: t.key.rowStride,
                    aDepthStride: t.key.columnStride,
                    b: qT + lane, bRowStride: br, c: sT + shared * br + lane, cRowStride: br)
            }
            tile += tileWidth
        }
        // Mask, per lane vector, the needed rows from its first key some lane does not see.
        var lane = 0
        while lane < br {
            let rows = neededRows(lane / w)
            let first = Swift.min(Swift.max(0, vectorFewestVisible[lane / w] - keyStart), rows)
            if first < rows {
                if exactKeyIndices {
                    maskScoresTransposedVector(sT + first * br + lane, stride: br, keyStart: keyStart + first,
                                               keyRows: rows - first, visible: UnsafePointer(visibleAsScalar + lane),
                                               lanes: w)
                } else {
                    maskScoresTransposed(sT + first * br + lane, stride: br, keyStart: keyStart + first,
                                         keyRows: rows - first, visible: visible + lane,
                                         lanes: Swift.max(0, Swift.min(w, rowCount - lane)))
                }
            }
            lane += w
        }
        // Online softmax, one vector of query lanes at a time, over the rows it needs (the rest
        // were masked: max unchanged, exp 0).
        lane = 0
        while lane < br {
            let rows = neededRows(lane / w)
            let tileRows = Swift.max(rows, neededRows((lane / w) ^ 1))
            let oldMax = T.load(rowMax + lane)
            var blockMax = oldMax
            for j in 0..<rows { blockMax = T.max(blockMax, T.load(sT + j * br + lane)) }
            // A lane that has seen only masked keys keeps max −inf; subtract 0 there instead.
            let safeMax = T.selectLess(blockMax, negativeLargest, T.splat(0), blockMax)
            let a = T.exp2NonPositive(T.sub(oldMax, safeMax))
            var sum = T.splat(0)
            for j in 0..<rows {
                let p = sT + j * br + lane
                let e = T.exp2NonPositive(T.sub(T.load(p), safeMax))
                T.store(e, p)
                sum = T.add(sum, e)
            }
            // Rows the other vector of the P·V tile needs: probability 0 here.
            for j in rows..<tileRows { T.store(T.splat(0), sT + j * br + lane) }
            T.store(T.fma(T.load(rowSum + lane), a, sum), rowSum + lane)
            T.store(blockMax, rowMax + lane)
            T.store(a, alpha + lane)
            lane += w
        }
        if keyStart > 0 {
            for m in 0..<mDim {
                let row = oT + m * br
                var lane = 0
                while lane < br {
                    T.store(T.mul(T.load(row + lane), T.load(alpha + lane)), row + lane)
                    lane += w
                }
            }
        }
        // Oᵀ += Vᵀ·Pᵀ per tile, to the tile's last visible key.
        tile = 0
        while tile < br {
            let depth = Swift.max(neededRows(tile / w), neededRows(tile / w + 1))
            if depth > 0 {
                blockProduct(
                    rows: mDim, columns: tileWidth, depth: depth,
                    a: v + keyStart * t.value.rowStride, aRowStride: t.value.columnStride,
                    aDepthStride: t.value.rowStride,
                    b: UnsafePointer(sT + tile), bRowStride: br, c: oT + tile, cRowStride: br, accumulate: true)
            }
            tile += tileWidth
        }
        keyStart += bc
    }

    // O = Oᵀ / l, transposed out; lse = (m + log2 l) · ln 2.
    let out = t.output.base.assumingMemoryBound(to: T.self)
    for i in 0..<rowCount {
        let l = rowSum[i]
        let inverse: T = l > 0 ? 1 / l : 0
        let row = out + (rowStart + i) * t.output.rowStride
        for m in 0..<mDim { row[m * t.output.columnStride] = oT[m * br + i] * inverse }
    }
    if let lseBase = t.logSumExp?.assumingMemoryBound(to: T.self) {
        for i in 0..<rowCount {
            let l = rowSum[i]
            lseBase[(rowStart + i) * t.logSumExpStride] =
                l > 0 ? (rowMax[i] + T(LibM.log2(Double(l)))) * T.ln2 : -T.infinity
        }
    }
}

func makeSoftmaxKernels() -> SoftmaxKernels {
    SoftmaxKernels(
        forwardRowBlock: softmaxQueryBlock,
        forwardScratchBytes: { shape, elementSize in
            (softmaxForwardScratchElements(shape) * elementSize + 3 * softmaxQueryBlock * MemoryLayout<Int>.stride).value
        },
        forwardFloat: { softmaxForwardTiled($0, Float.self) },
        forwardDouble: { softmaxForwardTiled($0, Double.self) },
        productFloat: { matrixProductFloat($0) })
}
