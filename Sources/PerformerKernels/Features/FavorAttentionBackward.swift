import PerformerKernelInterface

// Backward of one FAVOR+ query head. All shifts (c, ρ, κ, U, e) are constants for
// differentiation (the output does not depend on them), so the gradient of the scaled
// expressions with the shifts held fixed is the true gradient. In scaled units, with
// num_i, den_i the row's numerator and denominator (both divided by e^{U_i}):
//   ∂L/∂num_i = g_i / den_i,  ∂L/∂den_i = −(g_i·o_i) / den_i          (g = dO)
//   G_ij = (∂L/∂num_i·v_j + ∂L/∂den_i)·ν²·exp(ρ_i + κ_j − U_i)           (j ≤ i, causal chunk)
// Queries: exponential kinds get ∂L/∂a_f(q_i) = Q̂_if (G K̂)_if + Q̃_if (S̃ ∂L/∂num_i + z̃ ∂L/∂den_i)_f;
// the others H_i = ν e^{ρ_i} ∂L/∂φ(q_i) = (G K̂)_i + ν e^{ρ_i + c − U_i} (S̃ ∂L/∂num_i + z̃ ∂L/∂den_i).
// Keys see the later queries through the carried gradient state, kept scaled like the state:
//   G̃_f = e^{−e_f}·Σ_i ν e^{a_f(q_i) − U_i} ∂L/∂num_i  (g̃ likewise with ∂L/∂den_i),
// e_f the running max of a_f(q_i) − U_i over the queries folded in so far (ρ_i − U_i for the
// other kinds), so that every key factor ν·exp(a_f(k_j) + e_f) is ≤ ν (a_f(k_j) + a_f(q_i) ≤
// U_i whenever key j is visible to query i). Then ∂L/∂a_f(k_j) = K̂_jf (Gᵀ Q̂)_jf +
// ν e^{a_jf + e_f}(G̃_f·v_j + g̃_f), ∂L/∂v_j = Pᵀ ∂L/∂num + K̄′ G̃. The final state's gradient
// starts G̃ with e = −c_N; the initial state's is exp(c₀ + e)·G̃ at the end.
// The causal backward stores three scalars per position (U_i, den_i, ∂L/∂den_i) from its
// forward sweep; no state S̃_i is stored.

extension FavorHead {
    /// ∂L/∂num (rowsM) from dO_c (`outputGradient`) and the stored denominators, for rows
    /// whose denominator is usable; zero rows otherwise (the reverse sweep).
    func rowGradients(_ t: Int) {
        let den = s.row(.denominator)
        for i in 0..<t {
            let num = s.rowsM + i * s.vp, g = s.outputGradient + i * s.vp
            let r: T = usable(i) ? 1 / den[i] : 0
            if r.isFinite {
                rowScale(r, g, num, mv)
            } else {  // a subnormal den: 1/den overflows, g/den need not
                for j in 0..<mv { num[j] = g[j] / den[i] }
            }
        }
    }

    /// The query side's row gradients straight from dO_c, without forming the numerator:
    /// gradient2 = dO S̃ᵀ (and, causal, scoreGradient = dO V_cᵀ) are products the gradients need
    /// anyway, and dO_i·num_i = Q̃_i·gradient2_i [+ Σ_j P_ij (dO V_cᵀ)_ij]. Fills ∂L/∂den_i =
    /// −(dO_i·num_i)/den_i², 1/den_i, rowsM = ∂L/∂num and (causal) the score gradient
    /// (scoreGradient/den_i + ∂L/∂den_i)∘weights; zeros for rows without output. gradient2 stays
    /// unscaled (queryGradients applies 1/den_i).
    func outputGradientRows(_ t: Int, causal: Bool) {
        favorProduct(rows: t, columns: c, depth: mv, a: s.outputGradient, aRowStride: s.vp, aDepthStride: 1,
                     b: s.stateT, bRowStride: s.cp, c: s.gradient2, cRowStride: s.cp, accumulate: false)
        if causal {
            favorProduct(rows: t, columns: t, depth: mv, a: s.outputGradient, aRowStride: s.vp, aDepthStride: 1,
                         b: s.valuesT, bRowStride: s.tp, c: s.scoreGradient, cRowStride: s.tp, accumulate: false)
        }
        let den = s.row(.denominator), dden = s.row(.denominatorGradient), inverse = s.row(.inverseDenominator)
        for i in 0..<t {
            let num = s.rowsM + i * s.vp, g = s.outputGradient + i * s.vp
            let sg = s.scoreGradient + i * s.tp, p = s.scores + i * s.tp, w = s.weights + i * s.tp
            guard usable(i) else {
                for j in 0..<mv { num[j] = 0 }
                dden[i] = 0
                inverse[i] = 0
                if causal { for j in 0..<t { sg[j] = 0 } }
                continue
            }
            let r = 1 / den[i]
            var dot = rowDot(s.queryTilde + i * s.cp, s.gradient2 + i * s.cp, c)
            if causal { for j in 0...i { dot += p[j] * sg[j] } }
            if r.isFinite {
                let y = -dot * r * r
                dden[i] = y
                inverse[i] = r
                rowScale(r, g, num, mv)
                if causal { for j in 0...i { sg[j] = (sg[j] * r + y) * w[j] } }
            } else {
                // A subnormal den: 1/den overflows although the quotients need not, so divide
                // (gradient2 divided here, its scale 1/den then 1).
                let q = den[i], y = -dot / q / q
                dden[i] = y
                inverse[i] = 1
                for j in 0..<mv { num[j] = g[j] / q }
                let g2 = s.gradient2 + i * s.cp
                for f in 0..<c { g2[f] /= q }
                if causal { for j in 0...i { sg[j] = (sg[j] / q + y) * w[j] } }
            }
            if causal { for j in (i + 1)..<max(t, i + 1) { sg[j] = 0 } }
        }
    }

    func packOutputGradients(_ r0: Int, _ t: Int) {
        for i in 0..<t { packRow(task.outputGradient!, row: r0 + i, count: mv, into: s.outputGradient + i * s.vp) }
    }

    /// dx from the feature gradient `gradient` (∂L/∂a for exponential kinds, H otherwise) of t
    /// rows with features `hat`, projections `u` and inputs x̂ `input`: g_u, g_n by the map's
    /// chain rule, dx = s^(1/2)·(g_u W + 2 g_n x̂), into rows r0 ..< r0 + t of `target` (rows at
    /// outside `valid` get 0; added instead of stored when `accumulate`).
    func storeInputGradients(_ t: Int, valid: Range<Int>, gradient: UnsafePointer<T>, hat: UnsafePointer<T>,
                             u: UnsafePointer<T>, input: UnsafePointer<T>, shift: UnsafePointer<T>? = nil,
                             into target: StridedMatrix, _ r0: Int, accumulate: Bool) {
        let gn = s.row(.halfGradient), end = favorVectorEnd(T.self, m), zero = T.splat(0)
        for i in 0..<t {
            let g = gradient + i * s.cp, x = hat + i * s.cp, ui = u + i * s.mp
            let gu = s.projectionGradient + i * s.mp
            var sum: T = 0, sv = zero
            switch task.map {
            case .positive:  // g_u = g itself (the product below reads it in place)
                sum = -rowSum(g, m) / 2
            case .hyperbolic:
                for f in stride(from: 0, to: end, by: T.lanes) {
                    let plus = T.load(g + f), minus = T.load(g + m + f)
                    T.store(T.sub(plus, minus), gu + f)
                    sv = T.add(sv, T.add(plus, minus))
                }
                for f in end..<m {
                    gu[f] = g[f] - g[m + f]
                    sum += g[f] + g[m + f]
                }
                sum = -(sum + T.sumHalving(sv)) / 2
            case .trigonometric:
                for f in stride(from: 0, to: end, by: T.lanes) {
                    let gs = T.load(g + f), gc = T.load(g + m + f), xs = T.load(x + f), xc = T.load(x + m + f)
                    T.store(T.sub(T.mul(gs, xc), T.mul(gc, xs)), gu + f)
                    sv = T.fma(gs, xs, T.fma(gc, xc, sv))
                }
                for f in end..<m {
                    gu[f] = g[f] * x[m + f] - g[m + f] * x[f]
                    sum += g[f] * x[f] + g[m + f] * x[m + f]
                }
                sum = (sum + T.sumHalving(sv)) / 2
            case .relu:
                for f in stride(from: 0, to: end, by: T.lanes) {
                    T.store(T.selectLess(zero, T.load(ui + f), T.load(g + f), zero), gu + f)
                }
                for f in end..<m { gu[f] = ui[f] > 0 ? g[f] : 0 }
                // A query row scaled by 2^k (`reluRowScale`): X̂ = 2^k φ, so ∂L/∂u = 2^k·g.
                if let shift, shift[i] != 0 {
                    let k = reluScaleExponent(shift[i])
                    for f in 0..<m { gu[f] = T(sign: .plus, exponent: T.Exponent(k), significand: gu[f]) }
                }
            }
            gn[i] = sum
        }
        let positive = task.map == .positive
        favorProduct(rows: t, columns: d, depth: m, a: positive ? gradient : UnsafePointer(s.projectionGradient),
                     aRowStride: positive ? s.cp : s.mp, aDepthStride: 1,
                     b: s.projection, bRowStride: s.dp, c: s.inputGradient, cRowStride: s.dp, accumulate: false)
        for i in 0..<t {
            let dx = s.inputGradient + i * s.dp, x = input + i * s.dp
            if valid.contains(i) {
                let twice = 2 * gn[i]
                for col in 0..<d { dx[col] = sigma * (dx[col] + twice * x[col]) }
            } else {
                for col in 0..<d { dx[col] = 0 }
            }
            storeRow(dx, count: d, into: target, row: r0 + i, accumulate: accumulate)
        }
    }

    /// One row of a feature gradient: g1_f ← chunk_f + weight_f·(g2_f·a + b·z_f), where chunk_f
    /// is the intra-chunk part already in g1 (times hat_f for exponential kinds; 0 when not
    /// causal) and weight_f the row's state weights (exponential) or its one `rowWeight`.
    /// Queries: weights Q̃, a = 1/den, b = ∂L/∂den, z = z̃; keys: weights K̄′, a = b = 1, z = g̃
    /// (g2·1 + 1·z rounds as g2 + z).
    @inline(__always)
    func addStatePart(_ g1: UnsafeMutablePointer<T>, hat: UnsafePointer<T>, weights: UnsafePointer<T>, rowWeight: T,
                      _ g2: UnsafePointer<T>, times a: T, plus b: T, z: UnsafePointer<T>, causal: Bool) {
        let av = T.splat(a), bv = T.splat(b), wv = T.splat(rowWeight)
        let end = favorVectorEnd(T.self, c)
        for f in stride(from: 0, to: end, by: T.lanes) {
            let part = T.fma(T.load(g2 + f), av, T.mul(bv, T.load(z + f)))
            let state = T.mul(exponential ? T.load(weights + f) : wv, part)
            let chunk = causal ? (exponential ? T.mul(T.load(hat + f), T.load(g1 + f)) : T.load(g1 + f)) : T.splat(0)
            T.store(T.add(chunk, state), g1 + f)
        }
        for f in end..<c {
            let state = (exponential ? weights[f] : rowWeight) * (g2[f] * a + b * z[f])
            let chunk = causal ? (exponential ? hat[f] * g1[f] : g1[f]) : 0
            g1[f] = chunk + state
        }
    }

    /// dq for the prepared query chunk: needs Q̂, Q̃, rowFactor, gradient2 = dO S̃ᵀ and 1/den,
    /// ∂L/∂den, z̃ (outputGradientRows), and when causal the score gradient and K̂.
    func queryGradients(_ r0: Int, _ t: Int, causal: Bool) {
        if causal {
            favorProduct(rows: t, columns: c, depth: t, a: s.scoreGradient, aRowStride: s.tp, aDepthStride: 1,
                         b: s.keyHat, bRowStride: s.cp, c: s.gradient1, cRowStride: s.cp, accumulate: false)
        }
        let dden = s.row(.denominatorGradient), factor = s.row(.rowFactor), inverse = s.row(.inverseDenominator)
        for i in 0..<t {
            let g1 = s.gradient1 + i * s.cp, g2 = s.gradient2 + i * s.cp
            let hat = s.queryHat + i * s.cp, tilde = s.queryTilde + i * s.cp
            // state part: Q̃ (exponential) or the row weight, times (dO S̃ᵀ)/den + ∂L/∂den·z̃.
            addStatePart(g1, hat: hat, weights: tilde, rowWeight: factor[i], g2, times: inverse[i],
                         plus: dden[i], z: s.normalizer, causal: causal)
        }
        storeInputGradients(t, valid: 0..<t, gradient: s.gradient1, hat: s.queryHat, u: s.queryU, input: s.queryInput,
                            shift: task.map == .relu ? UnsafePointer(s.row(.queryShift)) : nil,
                            into: task.queryGradient!, r0, accumulate: false)
    }

    /// dk, dv for the prepared key chunk: needs K̂, a(k), κ, V_c, G̃ᵀ (stateGradientT), G̃, g̃,
    /// e, and when causal the chunk's scores and score gradient (stored by the forward sweep),
    /// Q̂ and ∂L/∂num.
    func keyGradients(_ r0: Int, _ t: Int, causal: Bool, scores: UnsafePointer<T>, scoreGradient: UnsafePointer<T>) {
        favorProduct(rows: t, columns: c, depth: mv, a: s.values, aRowStride: s.vp, aDepthStride: 1,
                     b: s.stateGradientT, bRowStride: s.cp, c: s.gradient2, cRowStride: s.cp, accumulate: false)
        let kappa = s.row(.keyShift), factor = s.row(.rowFactor), e = s.gradientShift
        // K̄′_jf = ν·exp(a_jf + e_f) (exponential) or ν·exp(κ_j + e)·K̂_jf: the key's weight
        // against the carried gradient state.
        for j in 0..<t {
            let b = s.bar + j * s.cp
            if kappa[j] == -.infinity {
                factor[j] = 0
                for f in 0..<c { b[f] = 0 }
            } else if exponential {
                let a = s.keyExponents + j * s.cp
                let nuV = T.splat(nu), end = favorVectorEnd(T.self, c)
                for f in stride(from: 0, to: end, by: T.lanes) {
                    T.store(T.mul(nuV, favorExpVector(T.self, T.add(T.load(a + f), T.load(e + f)))), b + f)
                }
                for f in end..<c { b[f] = nu * favorExp(a[f] + e[f]) }
            } else {
                let w = nu * favorExp(kappa[j] + e[0])
                factor[j] = w
                let hat = s.keyHat + j * s.cp
                for f in 0..<c { b[f] = w * hat[f] }
            }
        }
        favorProduct(rows: t, columns: mv, depth: c, a: s.bar, aRowStride: s.cp, aDepthStride: 1,
                     b: s.stateGradient, bRowStride: s.vp, c: s.valueGradient, cRowStride: s.vp, accumulate: false)
        if causal {
            favorProduct(rows: t, columns: c, depth: t, a: scoreGradient, aRowStride: 1, aDepthStride: s.tp,
                         b: s.queryHat, bRowStride: s.cp, c: s.gradient1, cRowStride: s.cp, accumulate: false)
            favorProduct(rows: t, columns: mv, depth: t, a: scores, aRowStride: 1, aDepthStride: s.tp,
                         b: s.rowsM, bRowStride: s.vp, c: s.valueGradient, cRowStride: s.vp, accumulate: true)
        }
        for j in 0..<t {
            let g1 = s.gradient1 + j * s.cp, g2 = s.gradient2 + j * s.cp
            let hat = s.keyHat + j * s.cp, b = s.bar + j * s.cp
            // state part: K̄′ (exponential) or the row weight, times V G̃ᵀ + g̃.
            addStatePart(g1, hat: hat, weights: b, rowWeight: factor[j], g2, times: 1, plus: 1,
                         z: s.normalizerGradient, causal: causal)
        }
        let accumulate = task.accumulateKeyGradients
        storeInputGradients(t, valid: validKeys(r0, t), gradient: s.gradient1, hat: s.keyHat, u: s.keyU,
                            input: s.keyInput, into: task.keyGradient!, r0, accumulate: accumulate)
        for j in 0..<t {
            storeRow(s.valueGradient + j * s.vp, count: mv, into: task.valueGradient!, row: r0 + j, accumulate: accumulate)
        }
    }

    /// Folds the chunk's queries (usable rows) into (G̃, g̃, e): log-scale a_f(q_i) − U_i
    /// (exponential) or ρ_i − U_i.
    func accumulateQueries(_ t: Int) {
        let rho = s.row(.queryShift), unit = s.row(.unit), log = s.row(.logScale)
        for i in 0..<t { log[i] = usable(i) ? (exponential ? -unit[i] : rho[i] - unit[i]) : -.infinity }
        accumulate(t, exponents: s.queryExponents, hat: s.queryHat, logScale: log, x: s.rowsM,
                   rowWeights: s.row(.denominatorGradient),
                   state: s.stateGradient, normalizer: s.normalizerGradient, shift: s.gradientShift)
    }

    /// (G̃, g̃, e) from the final-state gradient: e = −c_N (−inf and zeros where c_N = −inf).
    func loadFinalStateGradient() {
        let e = s.gradientShift
        guard let finalS = task.finalSGradient else {
            for f in 0..<c { e[f] = -.infinity }
            return
        }
        loadState(finalS, rows: c, columns: mv, into: s.stateGradient, ld: s.vp)
        loadState(task.finalZGradient, rows: c, columns: 1, into: s.normalizerGradient, ld: 1)
        for f in 0..<c {
            if s.shift[f] == -.infinity {
                e[f] = -.infinity
                s.normalizerGradient[f] = 0
                for j in 0..<mv { s.stateGradient[f * s.vp + j] = 0 }
            } else {
                e[f] = -s.shift[f]
            }
        }
    }

    /// dS̃₀ = exp(c₀ + e)·G̃, dz̃₀ likewise.
    func storeInitialStateGradient() {
        guard task.initialSGradient != nil || task.initialZGradient != nil else { return }
        let c0 = s.newShift
        if let initialC = task.initialC {
            loadState(initialC, rows: c, columns: 1, into: c0, ld: 1)
        } else {
            for f in 0..<c { c0[f] = emptyShift }
        }
        for f in 0..<c {
            let exponent = c0[f] + s.gradientShift[f]
            let factor: T = (c0[f] == -.infinity || s.gradientShift[f] == -.infinity) ? 0 : favorExp(exponent)
            s.normalizerGradient[f] *= factor
            for j in 0..<mv { s.stateGradient[f * s.vp + j] *= factor }
        }
        storeState(s.stateGradient, rows: c, columns: mv, ld: s.vp, into: task.initialSGradient)
        storeState(s.normalizerGradient, rows: c, columns: 1, ld: 1, into: task.initialZGradient)
    }
}

func favorBackward<T: KernelScalar>(_ taskPointer: UnsafePointer<FavorAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    let head = FavorHead<T>(task, backward: true)
    head.loadInitialState()
    if task.causal {
        favorCausalBackward(head)
    } else if task.shape.queryCount == 0 {
        favorStateBackward(head)
    } else {
        favorBidirectionalBackward(head)
    }
}

private func favorCausalBackward<T: KernelScalar>(_ head: FavorHead<T>) {
    let task = head.task, s = head.s
    let n = task.shape.queryCount, c = head.c, mv = head.mv
    let perPosition = s.perPosition
    // U, den, ∂L/∂den and whether the row was evaluated alone (`exactRow`), per position.
    func save(_ i: Int, at position: Int, exact: Bool) {
        perPosition[4 * position] = s.row(.unit)[i]
        perPosition[4 * position + 1] = s.row(.denominator)[i]
        perPosition[4 * position + 2] = s.row(.denominatorGradient)[i]
        perPosition[4 * position + 3] = exact ? 1 : 0
    }
    func load(_ i: Int, from position: Int) {
        s.row(.unit)[i] = perPosition[4 * position]
        s.row(.denominator)[i] = perPosition[4 * position + 1]
        s.row(.denominatorGradient)[i] = perPosition[4 * position + 2]
    }
    // Forward sweep: the states S̃ before each chunk, rebuilt (as S̃ᵀ, the only form it reads);
    // dq; U, den, ∂L/∂den per position and each chunk's P and score gradient. Rows from the
    // chunk's first inexact row on are evaluated alone, as the forward did (`exactRow`).
    transposeBlock(rows: c, columns: mv, s.state, s.vp, s.stateT, s.cp)
    var r0 = 0
    while r0 < n {
        let t = min(favorChunkRows, n - r0)
        head.prepareQueries(r0, t)
        head.prepareKeys(r0, t, transposed: true, transposedValues: true)
        head.readState(t, causal: true)
        let exact = head.denominator(t, causal: true)
        head.packOutputGradients(r0, exact)
        head.outputGradientRows(exact, causal: true)
        for i in 0..<exact { save(i, at: r0 + i, exact: false) }
        let stored = s.storedChunk(r0 / favorChunkRows)
        stored.scores.update(from: s.scores, count: t * s.tp)
        stored.scoreGradient.update(from: s.scoreGradient, count: t * s.tp)
        head.queryGradients(r0, exact, causal: true)
        if exact > 0 { head.accumulateKeys(exact, transposed: true) }
        for r in (r0 + exact)..<(r0 + t) {
            head.prepareKeys(r, 1, transposed: false, transposedValues: false)
            head.accumulateKeys(1, transposed: true)
            head.prepareQueries(r, 1)
            head.readState(1, causal: false)
            head.denominator(1, causal: false)
            head.packOutputGradients(r, 1)
            head.outputGradientRows(1, causal: false)
            save(0, at: r, exact: true)
            head.queryGradients(r, 1, causal: false)
        }
        r0 += t
    }
    // Reverse sweep: (G̃, g̃, e) carried from the end; dk, dv. A row evaluated alone: its query
    // joins the gradient state before its key reads it (the key was in the state it read).
    head.loadFinalStateGradient()
    let chunks = (n + favorChunkRows - 1) / favorChunkRows
    for chunk in stride(from: chunks - 1, through: 0, by: -1) {
        let r0 = chunk * favorChunkRows
        let t = min(favorChunkRows, n - r0)
        var exact = t
        while exact > 0 && perPosition[4 * (r0 + exact - 1) + 3] != 0 { exact -= 1 }
        for r in stride(from: r0 + t - 1, through: r0 + exact, by: -1) {
            head.prepareQueries(r, 1)
            head.prepareKeys(r, 1, transposed: false, transposedValues: false)
            load(0, from: r)
            head.packOutputGradients(r, 1)
            head.rowGradients(1)
            head.accumulateQueries(1)
            transposeBlock(rows: c, columns: mv, s.stateGradient, s.vp, s.stateGradientT, s.cp)
            head.keyGradients(r, 1, causal: false, scores: s.scores, scoreGradient: s.scoreGradient)
        }
        guard exact > 0 else { continue }
        head.prepareQueries(r0, exact)
        head.prepareKeys(r0, exact, transposed: false, transposedValues: false)
        for i in 0..<exact { load(i, from: r0 + i) }
        head.packOutputGradients(r0, exact)
        head.rowGradients(exact)
        transposeBlock(rows: c, columns: mv, s.stateGradient, s.vp, s.stateGradientT, s.cp)
        let stored = s.storedChunk(chunk)
        head.keyGradients(r0, exact, causal: true, scores: stored.scores, scoreGradient: stored.scoreGradient)
        head.accumulateQueries(exact)
    }
    head.storeInitialStateGradient()
}

private func favorBidirectionalBackward<T: KernelScalar>(_ head: FavorHead<T>) {
    let task = head.task, s = head.s
    let n = task.shape.queryCount, l = task.shape.keyCount, c = head.c, mv = head.mv
    // Keys outside keyStart ..< keyLimit add nothing to the state: skip them.
    let keyEnd = min(l, task.keyLimit)
    var r0 = task.keyStart
    while r0 < keyEnd {
        let t = min(favorChunkRows, l - r0)
        head.prepareKeys(r0, t, transposed: false, transposedValues: false)
        head.accumulateKeys(t)
        r0 += t
    }
    transposeBlock(rows: c, columns: mv, s.state, s.vp, s.stateT, s.cp)
    head.loadFinalStateGradient()
    r0 = 0
    while r0 < n {
        let t = min(favorChunkRows, n - r0)
        head.prepareQueries(r0, t)
        head.readState(t, causal: false)
        head.denominator(t, causal: false)
        head.packOutputGradients(r0, t)
        head.outputGradientRows(t, causal: false)
        head.queryGradients(r0, t, causal: false)
        head.accumulateQueries(t)
        r0 += t
    }
    transposeBlock(rows: c, columns: mv, s.stateGradient, s.vp, s.stateGradientT, s.cp)
    r0 = 0
    while r0 < l {
        let t = min(favorChunkRows, l - r0)
        head.prepareKeys(r0, t, transposed: false, transposedValues: false)
        head.keyGradients(r0, t, causal: false, scores: s.scores, scoreGradient: s.scoreGradient)
        r0 += t
    }
    // A state-only backward (no queries) may ask for the initial state's gradient.
    head.storeInitialStateGradient()
}
