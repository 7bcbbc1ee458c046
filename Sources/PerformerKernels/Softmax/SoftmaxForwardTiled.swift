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
//   O = α ∘ O + P·V          (AVX-512 with contiguous V rows: O row-major, A(i, j) = Pᵀ[j][i],
//                             B = V's block rows; depth per R-row query group)
//   or Oᵀ = α ∘ Oᵀ + Vᵀ·Pᵀ   (A(m, j) = V[j][m] through V's strides, B = Pᵀ; depth per tile)
// Key blocks no query of the task sees are skipped; only blocks cut by the causal diagonal
// or the key limit are masked. Within a key block each vector of query lanes gets only the
// key rows one of its lanes sees (on a causal diagonal the upper triangle is mostly skipped):
// Sᵀ rows past a vector's last visible key are neither computed, masked nor exponentiated
// (their Pᵀ is written 0 up to the block's last needed key), and P·V's depth per query group
// (or tile) stops at its last visible key. The skipped terms are exact zeros (masked
// scores), so every computed value keeps its bits.
// Scratch per task: (D + 144 + M + 4) × 64 elements + 4 × 64 Ints.

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

    // Scratch layout (elements of T): Qᵀ D×br | Sᵀ 144×br | O br×M or Oᵀ M×br | m | l | α |
    // visible counts as T, then as Int.
    let base = t.scratch.assumingMemoryBound(to: T.self)
    let qT = base
    let sT = qT + d * softmaxQueryBlock
    // AVX-512, V rows of contiguous columns, M a multiple of the tile width: O row-major
    // (query rows × M), P·V with A = Pᵀ read transposed (R query rows' probabilities per key
    // are contiguous) and B = V's rows in place, so its depth stops at each R-row group's last
    // visible key and O leaves by rows. Else Oᵀ (M × query lanes), B = Pᵀ, depth per two-vector
    // tile (on AVX2 the row-major form ran 2-9% slower: V in place thrashes L1 at M = 64,
    // packing it costs more than the shorter depths save).
    let rowMajor = softmaxOutputRowMajor(t, T.self)
    let o = sT + softmaxKeyBlock * softmaxQueryBlock
    let rowMax = o + mDim * softmaxQueryBlock
    let rowSum = rowMax + softmaxQueryBlock
    let alpha = rowSum + softmaxQueryBlock
    let visibleAsScalar = alpha + softmaxQueryBlock
    let visible = UnsafeMutableRawPointer(visibleAsScalar + softmaxQueryBlock).assumingMemoryBound(to: Int.self)
    // Per vector of query lanes (index lane / w): the most and fewest keys one of its real lanes sees.
    let vectorMostVisible = visible + softmaxQueryBlock
    let vectorFewestVisible = vectorMostVisible + softmaxQueryBlock
    // Per R-row group of query lanes (P·V's rows): the most keys one of its real lanes sees.
    let groupMostVisible = vectorFewestVisible + softmaxQueryBlock
    let groupRows = microKernelRows   // (on AVX-512 a group lies within one lane vector)

    // Visible keys per query lane; padded lanes see none (their Qᵀ is 0, results unused).
    var maxVisible = 0
    for i in 0..<br {
        let v = i < rowCount ? t.masking.visibleKeys(row: rowStart + i, keyCount: keyCount) : 0
        visible[i] = v
        visibleAsScalar[i] = T(v)
        if i < rowCount { maxVisible = Swift.max(maxVisible, v) }
    }
    var group = 0
    while group < br {
        var most = 0
        for i in group..<Swift.max(group, Swift.min(group + groupRows, rowCount)) { most = Swift.max(most, visible[i]) }
        groupMostVisible[group / groupRows] = most
        group += groupRows
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
    // Gathered column by column, 16 query rows at a time: a column of all 64 rows H·D apart (the
    // token-major q of a Hugging Face layer) falls in 2-4 L1 sets and missed L1 on every column;
    // 16 rows' lines stay in L1 across the columns, and each column still asks for 16 rows'
    // lines at once (the row-by-row order, vectorized as scatters, fetched one row at a time:
    // slower once q comes from memory, N = 2048).
    var rowGroup = 0
    while rowGroup < rowCount {
        let groupEnd = Swift.min(rowGroup + 16, rowCount)
        for k in 0..<d {
            let column = q + rowStart * t.query.rowStride + k * t.query.columnStride
            for i in rowGroup..<groupEnd { qT[k * br + i] = column[i * t.query.rowStride] * qScale }
        }
        rowGroup = groupEnd
    }
    for k in 0..<d {
        for i in rowCount..<br { qT[k * br + i] = 0 }
    }
    for i in 0..<br { rowMax[i] = -T.infinity; rowSum[i] = 0 }
    for i in 0..<(mDim * br) { o[i] = 0 }

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
            let oldMax = T.load(rowMax + lane)
            // Four running maxima: one chain waited a max latency per row. Max is exact, so the
            // split changes no bit.
            var max0 = oldMax, max1 = oldMax, max2 = oldMax, max3 = oldMax
            var j = 0
            while j + 4 <= rows {
                let p = sT + j * br + lane
                max0 = T.max(max0, T.load(p)); max1 = T.max(max1, T.load(p + br))
                max2 = T.max(max2, T.load(p + 2 * br)); max3 = T.max(max3, T.load(p + 3 * br))
                j += 4
            }
            while j < rows { max0 = T.max(max0, T.load(sT + j * br + lane)); j += 1 }
            let blockMax = T.max(T.max(max0, max1), T.max(max2, max3))
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
            // Rows other lanes need (a P·V group may span two vectors): probability 0 here.
            for j in rows..<bc { T.store(T.splat(0), sT + j * br + lane) }
            T.store(T.fma(T.load(rowSum + lane), a, sum), rowSum + lane)
            T.store(blockMax, rowMax + lane)
            T.store(a, alpha + lane)
            lane += w
        }
        if rowMajor {
            if keyStart > 0 {
                for i in 0..<br {
                    let scale = T.splat(alpha[i])
                    let row = o + i * mDim
                    var m = 0
                    while m < mDim { T.store(T.mul(T.load(row + m), scale), row + m); m += w }
                }
            }
            // O += P·V per R-row group of query lanes, to the group's last visible key; column
            // tiles outer, so one tile's V columns stay in cache across the groups.
            let panel = v + keyStart * t.value.rowStride
            var column = 0
            while column < mDim {
                group = 0
                while group < br {
                    let depth = Swift.min(Swift.max(0, groupMostVisible[group / groupRows] - keyStart), bc)
                    if depth > 0 {
                        blockProduct(
                            rows: Swift.min(groupRows, br - group), columns: tileWidth, depth: depth,
                            a: UnsafePointer(sT + group), aRowStride: 1, aDepthStride: br,
                            b: panel + column, bRowStride: t.value.rowStride, c: o + group * mDim + column,
                            cRowStride: mDim, accumulate: true)
                    }
                    group += groupRows
                }
                column += tileWidth
            }
        } else {
            if keyStart > 0 {
                for m in 0..<mDim {
                    let row = o + m * br
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
                        b: UnsafePointer(sT + tile), bRowStride: br, c: o + tile, cRowStride: br, accumulate: true)
                }
                tile += tileWidth
            }
        }
        keyStart += bc
    }

    // O = Oᵀ / l, transposed out; lse = (m + log2 l) · ln 2.
    let out = t.output.base.assumingMemoryBound(to: T.self)
    for i in 0..<rowCount {
        let l = rowSum[i]
        let inverse: T = l > 0 ? 1 / l : 0
        let row = out + (rowStart + i) * t.output.rowStride
        if rowMajor {
            let source = o + i * mDim
            for m in 0..<mDim { row[m * t.output.columnStride] = source[m] * inverse }
        } else {
            for m in 0..<mDim { row[m * t.output.columnStride] = o[m * br + i] * inverse }
        }
    }
    if let lseBase = t.logSumExp?.assumingMemoryBound(to: T.self) {
        for i in 0..<rowCount {
            let l = rowSum[i]
            lseBase[(rowStart + i) * t.logSumExpStride] =
                l > 0 ? (rowMax[i] + T(LibM.log2(Double(l)))) * T.ln2 : -T.infinity
        }
    }
}

/// The forward keeps O row-major (see softmaxForwardTiled): AVX-512 only, V rows of contiguous
/// columns, M a multiple of the tile width. (A function rather than a constant `false` in the
/// other builds, where the compiler would warn that the row-major code is never executed.)
@inline(__always)
func softmaxOutputRowMajor<T: KernelScalar>(_ t: SoftmaxForwardTask, _: T.Type) -> Bool {
    #if PERFORMER_ISA_AVX512
    t.value.columnStride == 1 && t.shape.valueDim % microKernelColumns(T.self) == 0
    #else
    false
    #endif
}

func makeSoftmaxKernels() -> SoftmaxKernels {
    SoftmaxKernels(
        forwardRowBlock: softmaxQueryBlock,
        forwardScratchBytes: { shape, elementSize in
            (softmaxForwardScratchElements(shape) * elementSize + 4 * softmaxQueryBlock * MemoryLayout<Int>.stride).value
        },
        forwardFloat: { softmaxForwardTiled($0, Float.self) },
        forwardDouble: { softmaxForwardTiled($0, Double.self) },
        productFloat: { matrixProductFloat($0) })
}
