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
// or the key limit are masked. Scratch per task: (D + 144 + M + 4) × 64 elements + 64 Ints.

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

    // Visible keys per query lane; padded lanes see none (their Qᵀ is 0, results unused).
    var minVisible = Int.max, maxVisible = 0
    for i in 0..<br {
        let v = i < rowCount ? t.masking.visibleKeys(row: rowStart + i, keyCount: keyCount) : 0
        visible[i] = v
        visibleAsScalar[i] = T(v)
        if i < rowCount { minVisible = Swift.min(minVisible, v); maxVisible = Swift.max(maxVisible, v) }
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
    var keyStart = 0
    while keyStart < maxVisible {
        let bc = Swift.min(softmaxKeyBlock, maxVisible - keyStart)
        blockProduct(
            rows: bc, columns: br, depth: d,
            a: k + keyStart * t.key.rowStride, aRowStride: t.key.rowStride, aDepthStride: t.key.columnStride,
            b: qT, bRowStride: br, c: sT, cRowStride: br, accumulate: false)
        if keyStart + bc > minVisible {
            // Keys below minVisible are visible to every lane: mask only the rows from there on
            // (on a causal diagonal block, ≤ 64 of its 144 rows).
            let first = Swift.max(0, minVisible - keyStart)
            if exactKeyIndices {
                maskScoresTransposedVector(sT + first * br, stride: br, keyStart: keyStart + first, keyRows: bc - first,
                                           visible: UnsafePointer(visibleAsScalar), lanes: br)
            } else {
                maskScoresTransposed(sT + first * br, stride: br, keyStart: keyStart + first, keyRows: bc - first,
                                     visible: visible, lanes: rowCount)
            }
        }
        // Online softmax, one vector of query lanes at a time.
        var lane = 0
        while lane < br {
            let oldMax = T.load(rowMax + lane)
            var blockMax = oldMax
            for j in 0..<bc { blockMax = T.max(blockMax, T.load(sT + j * br + lane)) }
            // A lane that has seen only masked keys keeps max −inf; subtract 0 there instead.
            let safeMax = T.selectLess(blockMax, negativeLargest, T.splat(0), blockMax)
            let a = T.exp2NonPositive(T.sub(oldMax, safeMax))
            var sum = T.splat(0)
            for j in 0..<bc {
                let p = sT + j * br + lane
                let e = T.exp2NonPositive(T.sub(T.load(p), safeMax))
                T.store(e, p)
                sum = T.add(sum, e)
            }
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
        blockProduct(
            rows: mDim, columns: br, depth: bc,
            a: v + keyStart * t.value.rowStride, aRowStride: t.value.columnStride, aDepthStride: t.value.rowStride,
            b: UnsafePointer(sT), bRowStride: br, c: oT, cRowStride: br, accumulate: true)
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
            (softmaxForwardScratchElements(shape) * elementSize + softmaxQueryBlock * MemoryLayout<Int>.stride).value
        },
        forwardFloat: { softmaxForwardTiled($0, Float.self) },
        forwardDouble: { softmaxForwardTiled($0, Double.self) },
        productFloat: { matrixProductFloat($0) })
}
