import PerformerKernelInterface

// Forward of one FAVOR+ query head (docs/FAVOR.md §4). Bidirectional: the keys are folded into
// (S̃, z̃, c) chunk by chunk (the per-feature shift grows as keys arrive, rescaling the state:
// the same function as a two-pass column max, one pass over the keys), then every query reads
// the state. Causal: chunk by chunk, queries read the state before the chunk plus the chunk's
// own keys j ≤ i through the T × T weights, then the chunk's keys join the state.

func favorForward<T: KernelScalar>(_ taskPointer: UnsafePointer<FavorAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    let head = FavorHead<T>(task, backward: false)
    let n = task.shape.queryCount, l = task.shape.keyCount
    head.loadInitialState()
    if !task.causal {
        // Keys outside keyStart ..< keyLimit add nothing to the state: skip them.
        var r0 = task.keyStart
        while r0 < min(l, task.keyLimit) {
            let t = min(favorChunkRows, l - r0)
            head.prepareKeys(r0, t, transposed: false, transposedValues: false)
            head.accumulateKeys(t)
            r0 += t
        }
    }
    var r0 = 0
    while r0 < n {
        let t = min(favorChunkRows, n - r0)
        head.prepareQueries(r0, t)
        if task.causal { head.prepareKeys(r0, t, transposed: true, transposedValues: false) }
        head.readState(t, causal: task.causal)
        let exact = head.numerator(t, causal: task.causal)
        head.storeOutputs(r0, exact)
        if task.causal {
            if exact > 0 { head.accumulateKeys(exact) }
            for i in exact..<t { head.exactRow(r0 + i) }
        }
        r0 += t
    }
    // Causal, or a state-only call (bidirectional with no queries): the state after the keys.
    head.storeFinalState()
}

extension FavorHead {
    /// Causal row r alone, as the decoder computes it: key r joins the state, then query r
    /// reads the state (U = γ, so the row's largest term is ν² and its denominator ≥ ν²: no
    /// underflow at any norm). Used from the first row of a chunk whose chunk evaluation is not
    /// exact (`firstInexactRow`) to the chunk's end; which rows those are depends only on rows
    /// ≤ r, so causality holds bit for bit.
    func exactRow(_ r: Int) {
        prepareKeys(r, 1, transposed: false, transposedValues: false)
        accumulateKeys(1)
        prepareQueries(r, 1)
        readState(1, causal: false)
        numerator(1, causal: false)
        storeOutputs(r, 1)
    }
}

func makeFavorAttentionKernels() -> FavorAttentionKernels {
    FavorAttentionKernels(
        scratchBytes: { shape, elementSize, causal, backward in
            elementSize == 4
                ? FavorScratch<Float>.bytes(shape: shape, causal: causal, backward: backward)
                : FavorScratch<Double>.bytes(shape: shape, causal: causal, backward: backward)
        },
        forwardFloat: { favorForward($0, Float.self) },
        forwardDouble: { favorForward($0, Double.self) },
        backwardFloat: { favorBackward($0, Float.self) },
        backwardDouble: { favorBackward($0, Double.self) },
        queryStateGradientFloat: { favorQueryStateGradient($0, Float.self) },
        queryStateGradientDouble: { favorQueryStateGradient($0, Double.self) })
}
