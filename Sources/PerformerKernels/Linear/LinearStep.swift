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
/// keeps v and the numerator in registers while it walks the C rows, so S is loaded and stored once and nothing else touches memory.
@inline(__always)
private func stepStateColumns<T: KernelScalar>(
    _ state: UnsafeMutablePointer<T>, _ c: Int, _ m: Int, _ rowStride: Int, _ k: UnsafePointer<T>, _ q: UnsafePointer<T>,
    _ v: UnsafePointer<T>, _ numerator: UnsafeMutablePointer<T>
) {
    let w = T.lanes
    var j = 0
    while j + 4 * w <= m {
        let v0 = T.load(v + j), v1 = T.load(v + j + w), v2 = T.load(v + j + 2 * w), v3 = T.load(v + j + 3 * w)
        var n0 = T.splat(0), n1 = n0, n2 = n0, n3 = n0
        var row = state + j
        for f in 0..<c {
            let kf = T.splat(k[f]), qf = T.splat(q[f])
            let s0 = T.fma(kf, v0, T.load(row)), s1 = T.fma(kf, v1, T.load(row + w))
            let s2 = T.fma(kf, v2, T.load(row + 2 * w)), s3 = T.fma(kf, v3, T.load(row + 3 * w))
            T.store(s0, row); T.store(s1, row + w); T.store(s2, row + 2 * w); T.store(s3, row + 3 * w)
            n0 = T.fma(qf, s0, n0); n1 = T.fma(qf, s1, n1); n2 = T.fma(qf, s2, n2); n3 = T.fma(qf, s3, n3)
            row += rowStride
        }
        T.store(n0, numerator + j); T.store(n1, numerator + j + w)
        T.store(n2, numerator + j + 2 * w); T.store(n3, numerator + j + 3 * w)
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

/// Elements of step scratch: φ(q), φ(k) (C each), v and the numerator (M each).
func linearStepScratchCount(featureDim c: Int, valueDim m: Int) -> ScratchSize {
    2 * ScratchSize(max(c, 1)) + 2 * ScratchSize(max(m, 1))
}
