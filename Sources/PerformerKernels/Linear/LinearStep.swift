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
/// `rowStride` apart, unit-stride within a row). A block of up to eight vectors of columns keeps
/// its numerator in registers while it walks the C rows, so each vector of S costs a load, an
/// FMA, a store and an FMA (v is read from L1 by the FMA), and where a block spans the whole
/// row (M = 64 in float32 on AVX2 and AVX-512) S is walked front to back, as the prefetcher
/// likes. Every element sees the same operations in the same order whatever the blocking.
@inline(__always)
private func stepStateColumns<T: KernelScalar>(
    _ state: UnsafeMutablePointer<T>, _ c: Int, _ m: Int, _ rowStride: Int, _ k: UnsafePointer<T>, _ q: UnsafePointer<T>,
    _ v: UnsafePointer<T>, _ numerator: UnsafeMutablePointer<T>
) {
    let w = T.lanes
    var j = 0
    while j + 8 * w <= m {
        stepStateBlock8(state + j, c, rowStride, k, q, v + j, numerator + j)
        j += 8 * w
    }
    while j + 4 * w <= m {
        stepStateBlock4(state + j, c, rowStride, k, q, v + j, numerator + j)
        j += 4 * w
    }
    while j + w <= m {
        let v0 = T.load(v + j)
        var n0 = T.splat(0)
        var row = state + j
        for f in 0..<c {
            let s0 = T.fma(T.splat(k[f]), v0, T.load(row))
            T.store(s0, row)
            n0 = T.fma(T.splat(q[f]), s0, n0)
            row += rowStride
        }
        T.store(n0, numerator + j)
        j += w
    }
    while j < m {
        var n: T = 0
        for f in 0..<c {
            let updated = state[f * rowStride + j] + k[f] * v[j]
            state[f * rowStride + j] = updated
            n += q[f] * updated
        }
        numerator[j] = n
        j += 1
    }
}

/// Eight vectors of columns: eight numerators, φ(k)_f and φ(q)_f and one S vector in flight
/// (11 of AVX2's 16 registers; v stays in memory).
@inline(__always)
private func stepStateBlock8<T: KernelScalar>(
    _ state: UnsafeMutablePointer<T>, _ c: Int, _ rowStride: Int, _ k: UnsafePointer<T>, _ q: UnsafePointer<T>,
    _ v: UnsafePointer<T>, _ numerator: UnsafeMutablePointer<T>
) {
    let w = T.lanes
    var n0 = T.splat(0), n1 = n0, n2 = n0, n3 = n0, n4 = n0, n5 = n0, n6 = n0, n7 = n0
    var row = state
    for f in 0..<c {
        let kf = T.splat(k[f]), qf = T.splat(q[f])
        @inline(__always) func update(_ i: Int, _ n: inout T.Vector) {
            let s = T.fma(kf, T.load(v + i * w), T.load(row + i * w))
            T.store(s, row + i * w)
            n = T.fma(qf, s, n)
        }
        update(0, &n0); update(1, &n1); update(2, &n2); update(3, &n3)
        update(4, &n4); update(5, &n5); update(6, &n6); update(7, &n7)
        row += rowStride
    }
    T.store(n0, numerator); T.store(n1, numerator + w); T.store(n2, numerator + 2 * w); T.store(n3, numerator + 3 * w)
    T.store(n4, numerator + 4 * w); T.store(n5, numerator + 5 * w)
    T.store(n6, numerator + 6 * w); T.store(n7, numerator + 7 * w)
}

/// Four vectors of columns (the rest of a row after the eight-vector blocks).
@inline(__always)
private func stepStateBlock4<T: KernelScalar>(
    _ state: UnsafeMutablePointer<T>, _ c: Int, _ rowStride: Int, _ k: UnsafePointer<T>, _ q: UnsafePointer<T>,
    _ v: UnsafePointer<T>, _ numerator: UnsafeMutablePointer<T>
) {
    let w = T.lanes
    var n0 = T.splat(0), n1 = n0, n2 = n0, n3 = n0
    var row = state
    for f in 0..<c {
        let kf = T.splat(k[f]), qf = T.splat(q[f])
        @inline(__always) func update(_ i: Int, _ n: inout T.Vector) {
            let s = T.fma(kf, T.load(v + i * w), T.load(row + i * w))
            T.store(s, row + i * w)
            n = T.fma(qf, s, n)
        }
        update(0, &n0); update(1, &n1); update(2, &n2); update(3, &n3)
        row += rowStride
    }
    T.store(n0, numerator); T.store(n1, numerator + w); T.store(n2, numerator + 2 * w); T.store(n3, numerator + 3 * w)
}

/// Elements of step scratch: φ(q), φ(k) (C each), v and the numerator (M each).
func linearStepScratchCount(featureDim c: Int, valueDim m: Int) -> ScratchSize {
    2 * ScratchSize(max(c, 1)) + 2 * ScratchSize(max(m, 1))
}
