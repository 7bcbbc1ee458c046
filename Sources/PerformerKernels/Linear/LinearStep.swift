import PerformerKernelInterface

// One recurrent step for every head of a decoder: O(C · M) per head whatever the position,
// no allocation (φ(q) and φ(k) go to the task's scratch).

func linearStep<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearStepTask>, _: T.Type) {
    let task = taskPointer.pointee
    let d = task.headDim, c = task.featureDim, m = task.valueDim
    let epsilon = T(task.epsilon)
    let queryFeatures = task.scratch.bindMemory(to: T.self, capacity: linearStepScratchCount(featureDim: c, valueDim: m))
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
            let state = states + (b * task.heads + h) * c * m
            let normalizer = normalizers + (b * task.heads + h) * c
            packFeatures(row(task.key, task.keyStrides, hk), row: 0, count: d, map: task.featureMap, into: keyFeatures)
            packFeatures(row(task.query, task.queryStrides, h), row: 0, count: d, map: task.featureMap, into: queryFeatures)
            packRow(row(task.value, task.valueStrides, hk), row: 0, count: m, into: values)
            // Row f of S: S[f] += φ(k)_f v, then num += φ(q)_f S[f]; one pass over S, contiguous rows.
            var den: T = 0
            for j in 0..<m { numerator[j] = 0 }
            for f in 0..<c {
                let kf = keyFeatures[f], qf = queryFeatures[f]
                normalizer[f] += kf
                den += qf * normalizer[f]
                let stateRow = state + f * m
                for j in 0..<m {
                    let updated = stateRow[j] + kf * values[j]
                    stateRow[j] = updated
                    numerator[j] += qf * updated
                }
            }
            den += epsilon
            let inverse: T = den != 0 ? 1 / den : 0
            for j in 0..<m { numerator[j] *= inverse }
            storeRow(numerator, count: m, into: row(task.output, task.outputStrides, h), row: 0, accumulate: false)
        }
    }
}

/// Elements of step scratch: φ(q), φ(k) (C each), v and the numerator (M each).
func linearStepScratchCount(featureDim c: Int, valueDim m: Int) -> Int { 2 * max(c, 1) + 2 * max(m, 1) }
