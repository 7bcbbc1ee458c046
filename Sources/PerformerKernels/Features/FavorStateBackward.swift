import PerformerKernelInterface

// Backward of a state-only call (no query rows; `FavorAttention.stateBackward`). Every key
// sees the same (G̃, g̃) = (∂L/∂S̃_out, ∂L/∂z̃_out) with e = −c_out, so it needs only c_out,
// the per-feature max of the keys' log-features over the initial shift c₀: a first pass
// projects the keys and folds their shifts, without building S̃, z̃ (only query rows read
// them); a second pass is the bidirectional backward's key pass. The shifts are maxima, the
// same values the state build reaches, so the results are the same bits as the bidirectional
// backward with zero queries.
extension FavorHead {
    /// c_f = max(c_f, max_j a_jf) (exponential kinds) or max(c, max_j κ_j) over the real keys
    /// of the prepared chunk: the shift `accumulateKeys` would reach, without the state.
    func foldKeyShifts(_ t: Int) {
        let kappa = s.row(.keyShift), shift = s.shift
        for j in 0..<t where kappa[j] != -.infinity {
            if exponential {
                let a = s.keyExponents + j * s.cp, end = favorVectorEnd(T.self, c)
                for f in stride(from: 0, to: end, by: T.lanes) {
                    T.store(T.max(T.load(shift + f), T.load(a + f)), shift + f)
                }
                for f in end..<c { shift[f] = max(shift[f], a[f]) }
            } else {
                for f in 0..<c { shift[f] = max(shift[f], kappa[j]) }
            }
        }
    }
}

func favorStateBackward<T: KernelScalar>(_ head: FavorHead<T>) {
    let task = head.task, s = head.s
    let l = task.shape.keyCount, c = head.c, mv = head.mv
    // Keys outside keyStart ..< keyLimit take no part in c_out: skip them.
    let keyEnd = min(l, task.keyLimit)
    var r0 = task.keyStart
    while r0 < keyEnd {
        let t = min(favorChunkRows, l - r0)
        head.prepareKeys(r0, t, transposed: false, transposedValues: false)
        head.foldKeyShifts(t)
        r0 += t
    }
    head.loadFinalStateGradient()
    transposeBlock(rows: c, columns: mv, s.stateGradient, s.vp, s.stateGradientT, s.cp)
    r0 = 0
    while r0 < l {
        let t = min(favorChunkRows, l - r0)
        head.prepareKeys(r0, t, transposed: false, transposedValues: false)
        head.keyGradients(r0, t, causal: false, scores: s.scores, scoreGradient: s.scores)
        r0 += t
    }
    head.storeInitialStateGradient()
}
