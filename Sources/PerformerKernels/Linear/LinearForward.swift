import PerformerKernelInterface

// Forward of one query head, causal (chunked, state carried across chunks) or not
// (state over all keys first, then every query against it).

func linearForward<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    let n = task.shape.queryCount, l = task.shape.keyCount
    let c = task.shape.featureDim, m = task.shape.valueDim
    let epsilon = T(task.epsilon)
    var bytes = 0
    let s = LinearScratch<T>(base: task.scratch, shape: task.shape, causal: task.causal, backward: false, bytes: &bytes)
    loadState(task.causal ? task.initialState : nil, rows: c, columns: m, into: s.state, ld: s.mp)
    loadState(task.causal ? task.initialNormalizer : nil, rows: c, columns: 1, into: s.normalizer, ld: 1)

    if !task.causal {
        var r0 = 0
        while r0 < l {
            let t = min(linearChunkRows, l - r0)
            packKeyChunk(task, s, r0, t, transposedValues: false)
            advanceState(s, t, c, m)
            r0 += t
        }
    }
    var r0 = 0
    while r0 < n {
        let t = min(linearChunkRows, n - r0)
        packQueryChunk(task, s, r0, t)
        if task.causal { packKeyChunk(task, s, r0, t, transposedValues: false) }
        chunkNumerator(s, t, c, m, causal: task.causal, epsilon: epsilon)
        for i in 0..<t {
            let den = s.denominator[i]
            let inverse: T = den != 0 ? 1 / den : 0
            let row = s.rowsM + i * s.mp
            for j in 0..<m { row[j] *= inverse }
            storeRow(row, count: m, into: task.output!, row: r0 + i, accumulate: false)
        }
        if task.causal { advanceState(s, t, c, m) }
        r0 += t
    }
    if task.causal {
        storeState(s.state, rows: c, columns: m, ld: s.mp, into: task.finalState)
        storeState(s.normalizer, rows: c, columns: 1, ld: 1, into: task.finalNormalizer)
    }
}
