import PerformerKernelInterface

// One recurrent step for every head of a decoder: O(C · M) per head whatever the position,
// no allocation (φ(q) and φ(k) go to the task's scratch).

func linearStep<T: BinaryFloatingPoint>(_ taskPointer: UnsafePointer<LinearStepTask>, _: T.Type) {
    let task = taskPointer.pointee
    let d = task.headDim, c = task.featureDim, m = task.valueDim
    let epsilon = T(task.epsilon)
    let queryFeatures = task.scratch.bindMemory(to: T.self, capacity: 2 * max(c, 1))
    let keyFeatures = queryFeatures + max(c, 1)
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
            let value = row(task.value, task.valueStrides, hk)
            let valueBase = value.base.assumingMemoryBound(to: T.self)
            let output = row(task.output, task.outputStrides, h)
            let outputBase = output.base.assumingMemoryBound(to: T.self)
            // S ← S + φ(k) vᵀ, z ← z + φ(k); then φ(q)ᵀ S accumulates into the output row.
            var den: T = 0
            for f in 0..<c {
                let kf = keyFeatures[f], qf = queryFeatures[f]
                normalizer[f] += kf
                den += qf * normalizer[f]
            }
            den += epsilon
            let inverse: T = den != 0 ? 1 / den : 0
            for j in 0..<m {
                let vj = valueBase[j * value.columnStride]
                var sum: T = 0
                for f in 0..<c {
                    let updated = state[f * m + j] + keyFeatures[f] * vj
                    state[f * m + j] = updated
                    sum += queryFeatures[f] * updated
                }
                outputBase[j * output.columnStride] = sum * inverse
            }
        }
    }
}
