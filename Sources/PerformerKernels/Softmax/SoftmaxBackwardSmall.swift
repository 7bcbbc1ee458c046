import PerformerKernelInterface

// The fused key pass of a head with a few queries × keys (a decode step's backward: 1 × 1)
// without the tiled machinery: no packing, no lanes or tiles padded to the micro-kernel's
// width, no 64-lane accumulators to zero. A fused task covering n × L ≤ `backwardSmallPairs`
// runs one (query block) × (key block) pair per head in the tiled pass (SoftmaxBackwardTiled.swift);
// this path performs each element's operations of that pair in the same order — every product
// a `T.fma` chain from 0 over its depth, added once to a zeroed accumulator; P and dS by the
// same vector functions on broadcast values; head g ≥ 1 added to the group's total after its
// own sum — so its results are the tiled pass's bit for bit.

/// Most queries × keys of a fused key task that take this path. Both paths cost about the same
/// near 8 pairs of D = M = 64 (this one grows with the pairs, the tiled one pads to whole tiles).
let backwardSmallPairs = 8

/// The task is a fused key task this path covers.
@inline(__always)
func takesSmallBackward(_ t: SoftmaxBackwardTask) -> Bool {
    t.fusedQueryGradient && t.rowStart == 0 && t.shape.queryCount * t.rowCount <= backwardSmallPairs
}

/// a · b + c as `T.fma` computes one lane of it (fused where the ISA has FMA), on scalars:
/// broadcasting into vectors and extracting lane 0 cost ~8x the arithmetic here.
@inline(__always)
private func laneFMA<T: KernelScalar>(_ a: T, _ b: T, _ c: T) -> T {
    #if PERFORMER_ISA_AVX512 || PERFORMER_ISA_AVX2
    c.addingProduct(a, b)
    #else
    a * b + c
    #endif
}

/// dK, dV of keys 0 ..< rowCount summed over the group's heads, and dQ of every head; see above.
func softmaxBackwardSmall<T: KernelScalar>(_ t: SoftmaxBackwardTask, _: T.Type) {
    let d = t.shape.headDim, m = t.shape.valueDim, n = t.shape.queryCount, keys = t.rowCount
    // Scratch (far smaller than the tiled layout it replaces): P, dS (n × keys each), the
    // group's dK (keys × d) and dV (keys × m) totals, and one head's sums for one key or query (d + m).
    let p = t.scratch.assumingMemoryBound(to: T.self)
    let dS = p + n * keys
    let totalK = dS + n * keys, totalV = totalK + keys * d
    let own = totalV + keys * m
    let k = UnsafePointer(t.key.base.assumingMemoryBound(to: T.self))
    let v = UnsafePointer(t.value.base.assumingMemoryBound(to: T.self))
    let (kRow, kColumn) = (t.key.rowStride, t.key.columnStride)
    let (vRow, vColumn) = (t.value.rowStride, t.value.columnStride)
    // The tiled pass runs its pair only when the block's first key is visible to some row.
    let runs = 0 < t.masking.keyLimit && firstVisibleQuery(t, key: 0) < n
    let scoreScale = T(t.scale) * T.log2e, scale = T(t.scale)
    for g in 0..<t.groupSize {
        let head = BackwardHead<T>(t, group: g)
        if runs {
            for i in 0..<n {
                let lse2 = head.lse[i * head.lseStride] * T.log2e
                let visible = t.masking.visibleKeys(row: i, keyCount: t.shape.keyCount)
                let valid = lse2.isFinite ? Swift.min(Swift.max(visible, 0), keys) : 0
                let shift = lse2.isFinite ? lse2 : 0
                let delta = head.delta[i]
                let clamp = !(Swift.abs(lse2) < T(0x1p16))
                let q = head.q + i * head.qRow, dO = head.dO + i * head.dORow
                for j in 0..<keys {
                    var s: T = 0, dP: T = 0
                    for x in 0..<d { s = laneFMA(q[x * head.qColumn] * scoreScale, k[j * kRow + x * kColumn], s) }
                    for y in 0..<m { dP = laneFMA(dO[y * head.dOColumn], v[j * vRow + y * vColumn], dP) }
                    var e: T = 0
                    if j < valid {
                        // As the tiled pair: exp2 (clamped to 1) for extreme rows, else exp2NonPositive.
                        e = clamp ? Swift.min(T.exp2(T.splat(s - shift))[0], 1) : T.exp2NonPositive(T.splat(s - shift))[0]
                    }
                    p[i * keys + j] = e
                    dS[i * keys + j] = e * (dP - delta) * scale
                }
            }
        }
        // dK_j = Σ_i q_i dS_ij, dV_j = Σ_i dO_i P_ij: each element's chain runs over i in order
        // (zero when the pair does not run), then the head's own sums join the group's total.
        let ownK = own, ownV = own + d
        for j in 0..<keys {
            for x in 0..<d { ownK[x] = 0 }
            for y in 0..<m { ownV[y] = 0 }
            if runs {
                for i in 0..<n {
                    let a = dS[i * keys + j], b = p[i * keys + j]
                    let q = head.q + i * head.qRow, dO = head.dO + i * head.dORow
                    for x in 0..<d { ownK[x] = laneFMA(q[x * head.qColumn], a, ownK[x]) }
                    for y in 0..<m { ownV[y] = laneFMA(dO[y * head.dOColumn], b, ownV[y]) }
                }
            }
            let tk = totalK + j * d, tv = totalV + j * m
            if g == 0 {
                for x in 0..<d { tk[x] = 0 + ownK[x] }
                for y in 0..<m { tv[y] = 0 + ownV[y] }
            } else {
                for x in 0..<d { tk[x] = (0 + ownK[x]) + tk[x] }
                for y in 0..<m { tv[y] = (0 + ownV[y]) + tv[y] }
            }
        }
        // dQ_i = Σ_j dS_ij k_j, each element's chain over j in order.
        for i in 0..<n {
            for x in 0..<d { ownK[x] = 0 }
            if runs {
                for j in 0..<keys {
                    let a = dS[i * keys + j], kj = k + j * kRow
                    for x in 0..<d { ownK[x] = laneFMA(a, kj[x * kColumn], ownK[x]) }
                }
            }
            let target = head.dQ + i * head.dQRow
            for x in 0..<d { target[x * head.dQColumn] = 0 + ownK[x] }
        }
    }
    let dKOut = t.keyGradient.base.assumingMemoryBound(to: T.self)
    let dVOut = t.valueGradient.base.assumingMemoryBound(to: T.self)
    for j in 0..<keys {
        for x in 0..<d { dKOut[j * t.keyGradient.rowStride + x * t.keyGradient.columnStride] = totalK[j * d + x] }
        for y in 0..<m { dVOut[j * t.valueGradient.rowStride + y * t.valueGradient.columnStride] = totalV[j * m + y] }
    }
}
