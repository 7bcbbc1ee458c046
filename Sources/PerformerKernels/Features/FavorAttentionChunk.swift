#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

// The steps one chunk of FAVOR+ attention goes through, in the stabilized form of
// docs/FAVOR.md §4, shared by the bidirectional and causal kernels, forward and backward.
// Every O(t·m·D), O(t·C·M) or O(t²·C) step is a `favorProduct` (the shared micro-kernel, with
// the operand contract of the linear kernels' `chunkProduct`) over contiguous padded scratch;
// the rest is O(t·C) elementwise work on whole rows (vector exp2 from Kernels/).
//
// Notation (per row x): x̂ = x·s^(1/2), n = ‖x̂‖², u = W x̂.
// - exponential kinds (positive, hyperbolic): exponents a_f (u − n/2, and −u − n/2), row shift
//   ρ = max_f a_f, row features X̂_f = exp(a_f − ρ); the state shift c is per feature.
// - trigonometric: ρ = n/2, X̂ = [sin u, cos u] (φ = ν·e^ρ·X̂); c is one scalar (all c_f equal).
// - relu: ρ = 0, X̂ = φ = relu(u) + κ, ν = 1, c = 0: no scaling at all.
// So for every kind φ_f(x) = ν·exp(ρ)·X̂_f, and for the exponential kinds also ν·exp(a_f).
// Shifts are constants for differentiation; a shift of −inf means "nothing yet", and a factor
// whose exponent would be −inf − (−inf) is 0.

/// eˣ in the element type of an exponent that is ≤ 0 up to rounding (exactly 0 at −inf), with
/// x > 0 taken as 0: every argument here is a difference against a running max, so the factor
/// is at most 1 mathematically. The rounding of exponents near ±1e30 (a projection with such
/// entries is finite, so accepted) can put such a difference at +1e14, whose eˣ = +inf would
/// turn a 0 of another factor into NaN. NaN stays NaN.
@inline(__always)
func favorExp<T: KernelScalar>(_ x: T) -> T { linearExp(x > 0 ? 0 : x) }

/// `favorExp` per lane through the shared vector exp2 (0 at −inf and below the normal range):
/// the terms that matter have small |x| and full accuracy.
@inline(__always)
func favorExpVector<T: KernelScalar>(_: T.Type, _ x: T.Vector) -> T.Vector {
    let zero = T.splat(0)
    return T.exp2(T.mul(T.selectLess(zero, x, zero, x), T.splat(T.log2e)))
}

/// The end of the whole vectors in a row of n elements: elementwise row work runs vectors on
/// 0 ..< end and scalars on end ..< n, never touching padding. (Written as two plain loops at
/// every use: loop bodies passed as closures were compiled as out-of-line calls per vector.)
@inline(__always)
func favorVectorEnd<T: KernelScalar>(_: T.Type, _ n: Int) -> Int { n - n % T.lanes }

/// relu query features are used as they are (ρ = 0) unless every one is below 2⁻³² (a tiny
/// relu_offset with u ≤ 0: products with the state were subnormal, relu_offset = 1e-45 and
/// q = 0 gave inf/NaN). Such a row is scaled by 2^k (exact), 2^k·max ∈ [1, 2), and gets the
/// row shift ρ = −k·ln 2: φ = e^ρ·X̂ as for every kind, so the output, in which the scale
/// cancels except against ε (which the shift scales alike), is unchanged. Returns ρ.
@inline(__always)
func reluRowScale<T: KernelScalar>(_ x: UnsafeMutablePointer<T>, _ m: Int, largest: T) -> T {
    guard largest > 0, largest < T(0x1p-32) else { return 0 }
    let k = -Int(largest.exponent)
    for f in 0..<m { x[f] = T(sign: .plus, exponent: T.Exponent(k), significand: x[f]) }
    return -T(k) * T(M_LN2)
}

/// k of a relu row shift ρ = −k·ln 2 (`reluRowScale`).
@inline(__always)
func reluScaleExponent<T: KernelScalar>(_ rho: T) -> Int { Int((-Double(rho) / M_LN2).rounded()) }

struct FavorHead<T: KernelScalar> {
    let task: FavorAttentionTask
    let s: FavorScratch<T>
    let d: Int, m: Int, c: Int, mv: Int
    let exponential: Bool
    /// ν (1/√m, 1/√(2m) for hyperbolic, 1 for relu) and ν².
    let nu: T, nu2: T
    let sigma: T
    /// c of an empty state: −inf, or 0 for relu (which is never shifted).
    let emptyShift: T

    init(_ task: FavorAttentionTask, backward: Bool) {
        self.task = task
        var bytes = 0
        s = FavorScratch(base: task.scratch, shape: task.shape, causal: task.causal, backward: backward, bytes: &bytes)
        d = task.shape.dim
        m = task.shape.numFeatures
        c = task.shape.featureCount
        mv = task.shape.valueDim
        exponential = task.map == .positive || task.map == .hyperbolic
        switch task.map {
        case .positive, .trigonometric: nu = T(1 / Double(m).squareRoot())
        case .hyperbolic: nu = T(1 / Double(2 * m).squareRoot())
        case .relu: nu = 1
        }
        nu2 = nu * nu
        sigma = T(task.inputScale)
        emptyShift = task.map == .relu ? 0 : -.infinity
        // Wᵀ (and W for the backward) as padded B panels.
        let w = task.projection.assumingMemoryBound(to: T.self)
        transposeBlock(rows: m, columns: d, w, d, s.projectionT, s.mp)
        if backward {
            for f in 0..<m { for col in 0..<d { s.projection[f * s.dp + col] = w[f * d + col] } }
        }
    }

    // MARK: Features

    /// x̂ (t × D), n/2 and u = x̂ Wᵀ (t × m) for rows r0 ..< r0 + t of `source`.
    func project(_ source: StridedMatrix, _ r0: Int, _ t: Int,
                 input: UnsafeMutablePointer<T>, u: UnsafeMutablePointer<T>, half: UnsafeMutablePointer<T>) {
        for i in 0..<t {
            half[i] = packScaledRow(source, row: r0 + i, count: d, scale: sigma, into: input + i * s.dp) / 2
        }
        favorProduct(rows: t, columns: m, depth: d, a: input, aRowStride: s.dp, aDepthStride: 1,
                     b: s.projectionT, bRowStride: s.mp, c: u, cRowStride: s.mp, accumulate: false)
    }

    /// From u and n/2 of t rows (rows `valid` of them real, the others padded keys): the
    /// exponents a (exponential kinds), the row features X̂ and the row shifts ρ (−inf for a
    /// padded row, whose X̂ is zero).
    func rowFeatures(_ t: Int, valid: Range<Int>, u: UnsafePointer<T>, half: UnsafePointer<T>, query: Bool,
                     exponents: UnsafeMutablePointer<T>, hat: UnsafeMutablePointer<T>, shift: UnsafeMutablePointer<T>) {
        for i in 0..<t {
            let ui = u + i * s.mp, a = exponents + i * s.cp, x = hat + i * s.cp
            guard valid.contains(i) else {
                shift[i] = -.infinity
                for f in 0..<c { x[f] = 0; a[f] = 0 }
                continue
            }
            let h = half[i]
            switch task.map {
            case .positive, .hyperbolic:
                let hyperbolic = task.map == .hyperbolic
                var rho = -T.infinity
                var rhoV = T.splat(-T.infinity)
                let hv = T.splat(h), zero = T.splat(0)
                let end = favorVectorEnd(T.self, m)
                for f in stride(from: 0, to: end, by: T.lanes) {
                    let uv = T.load(ui + f)
                    let plus = T.sub(uv, hv)
                    T.store(plus, a + f)
                    rhoV = T.max(rhoV, plus)
                    if hyperbolic {
                        let minus = T.sub(T.sub(zero, uv), hv)
                        T.store(minus, a + m + f)
                        rhoV = T.max(rhoV, minus)
                    }
                }
                for f in end..<m {
                    a[f] = ui[f] - h
                    rho = max(rho, a[f])
                    if hyperbolic {
                        a[m + f] = -ui[f] - h
                        rho = max(rho, a[m + f])
                    }
                }
                rho = max(rho, T.maxAcross(rhoV))
                shift[i] = rho
                // Bidirectional attention reads exponential features only through the state
                // (Q̃, K̄ from a directly): X̂ is needed by the causal chunk alone.
                if task.causal {
                    let rv = T.splat(rho), end = favorVectorEnd(T.self, c)
                    for f in stride(from: 0, to: end, by: T.lanes) {
                        T.store(favorExpVector(T.self, T.sub(T.load(a + f), rv)), x + f)
                    }
                    for f in end..<c { x[f] = favorExp(a[f] - rho) }
                }
            case .trigonometric:
                shift[i] = h
                for f in 0..<m {
                    let angle = Double(ui[f])
                    x[f] = T(sin(angle))
                    x[m + f] = T(cos(angle))
                }
            case .relu:
                let kappa = T(task.reluOffset)
                var largest: T = 0
                for f in 0..<m {
                    x[f] = max(ui[f], 0) + kappa
                    largest = max(largest, x[f])
                }
                shift[i] = query ? reluRowScale(x, m, largest: largest) : 0
            }
        }
    }

    /// Queries r0 ..< r0 + t: x̂, u, a, Q̂, ρ.
    func prepareQueries(_ r0: Int, _ t: Int) {
        project(task.query, r0, t, input: s.queryInput, u: s.queryU, half: s.row(.queryHalf))
        rowFeatures(t, valid: 0..<t, u: s.queryU, half: s.row(.queryHalf), query: true, exponents: s.queryExponents,
                    hat: s.queryHat, shift: s.row(.queryShift))
    }

    /// The real (unpadded) keys among rows r0 ..< r0 + t, as chunk rows: keyStart ≤ r0 + i < keyLimit.
    func validKeys(_ r0: Int, _ t: Int) -> Range<Int> {
        let end = max(0, min(t, task.keyLimit - r0))
        return min(end, max(0, task.keyStart - r0))..<end
    }

    /// Keys r0 ..< r0 + t: x̂, u, a, K̂, κ, V_c; with `transposed` also K̂ᵀ (and, with
    /// `transposedValues`, V_cᵀ), their columns t ..< T zeroed in a partial chunk.
    func prepareKeys(_ r0: Int, _ t: Int, transposed: Bool, transposedValues: Bool) {
        project(task.key, r0, t, input: s.keyInput, u: s.keyU, half: s.row(.keyHalf))
        rowFeatures(t, valid: validKeys(r0, t), u: s.keyU, half: s.row(.keyHalf), query: false, exponents: s.keyExponents,
                    hat: s.keyHat, shift: s.row(.keyShift))
        for i in 0..<t { packRow(task.value, row: r0 + i, count: mv, into: s.values + i * s.vp) }
        if transposed {
            transposeBlock(rows: t, columns: c, s.keyHat, s.cp, s.keyHatT, s.tp)
            if t < favorChunkRows { for f in 0..<c { for i in t..<favorChunkRows { s.keyHatT[f * s.tp + i] = 0 } } }
        }
        if transposedValues {
            transposeBlock(rows: t, columns: mv, s.values, s.vp, s.valuesT, s.tp)
            if t < favorChunkRows { for j in 0..<mv { for i in t..<favorChunkRows { s.valuesT[j * s.tp + i] = 0 } } }
        }
    }

    // MARK: Queries against the state and the chunk

    /// Row units U_i = max(γ_i, ρ_i + r_i) (γ_i = max_f (a_f(q_i) + c_f), or ρ_i + c for the
    /// other kinds; r_i the prefix max of the chunk's key shifts, causal only) and Q̃_i scaled
    /// to them: Q̃_if = ν·exp(a_f + c_f − U_i) (exponential) or ν·exp(ρ_i + c − U_i)·Q̂_if.
    func readState(_ t: Int, causal: Bool) {
        let rho = s.row(.queryShift), kappa = s.row(.keyShift), unit = s.row(.unit), factor = s.row(.rowFactor)
        var prefix = -T.infinity
        for i in 0..<t {
            let a = s.queryExponents + i * s.cp, q = s.queryTilde + i * s.cp
            var gamma: T
            if exponential {
                gamma = -.infinity
                var gv = T.splat(-T.infinity)
                let end = favorVectorEnd(T.self, c)
                for f in stride(from: 0, to: end, by: T.lanes) { gv = T.max(gv, T.add(T.load(a + f), T.load(s.shift + f))) }
                for f in end..<c { gamma = max(gamma, a[f] + s.shift[f]) }
                gamma = max(gamma, T.maxAcross(gv))
            } else {
                gamma = rho[i] + s.shift[0]
            }
            var u = gamma
            if causal {
                prefix = max(prefix, kappa[i])
                u = max(u, rho[i] + prefix)
            }
            unit[i] = u
            guard u != -.infinity else {
                factor[i] = 0
                for f in 0..<c { q[f] = 0 }
                continue
            }
            scaleQuery(i, unit: u)
        }
    }

    /// Q̃_i of prepared query row i against the state's shifts c (`s.shift`) at row unit u
    /// (finite): ν·exp(a_f + c_f − u), or ν·exp(ρ_i + c − u)·Q̂_if (its factor into `rowFactor`).
    /// Exponents above u count as u (`favorExp`): u bounds them when it is the row's unit.
    @inline(__always)
    func scaleQuery(_ i: Int, unit u: T) {
        let q = s.queryTilde + i * s.cp
        if exponential {
            let a = s.queryExponents + i * s.cp
            let uv = T.splat(u), nuv = T.splat(nu), end = favorVectorEnd(T.self, c)
            for f in stride(from: 0, to: end, by: T.lanes) {
                T.store(T.mul(nuv, favorExpVector(T.self, T.sub(T.add(T.load(a + f), T.load(s.shift + f)), uv))), q + f)
            }
            for f in end..<c { q[f] = nu * favorExp(a[f] + s.shift[f] - u) }
        } else {
            let hat = s.queryHat + i * s.cp
            let weight = nu * favorExp(s.row(.queryShift)[i] + s.shift[0] - u)
            s.row(.rowFactor)[i] = weight
            for f in 0..<c { q[f] = weight * hat[f] }
        }
    }

    /// weights_ij = ν²·exp(ρ_i + κ_j − U_i) for j ≤ i (0 for padded keys, rows that see
    /// nothing, and j > i), and scores P = (Q̂ K̂ᵀ) ∘ weights. Needs U (readState or stored).
    func chunkScores(_ t: Int) {
        favorProduct(rows: t, columns: t, depth: c, a: s.queryHat, aRowStride: s.cp, aDepthStride: 1,
                     b: s.keyHatT, bRowStride: s.tp, c: s.scores, cRowStride: s.tp, accumulate: false)
        let rho = s.row(.queryShift), kappa = s.row(.keyShift), unit = s.row(.unit)
        for i in 0..<t {
            let w = s.weights + i * s.tp, p = s.scores + i * s.tp
            let u = unit[i], r = rho[i]
            if u == -.infinity {
                for j in 0...i { w[j] = 0; p[j] = 0 }
            } else {
                // κ_j = −inf (padded key) gives exp(−inf) = 0.
                let offset = T.splat(r - u), nuv = T.splat(nu2), end = favorVectorEnd(T.self, i + 1)
                for j in stride(from: 0, to: end, by: T.lanes) {
                    let weight = T.mul(nuv, favorExpVector(T.self, T.add(T.load(kappa + j), offset)))
                    T.store(weight, w + j)
                    T.store(T.mul(T.load(p + j), weight), p + j)
                }
                for j in end..<(i + 1) {
                    let weight: T = kappa[j] == -.infinity ? 0 : nu2 * favorExp(r + kappa[j] - u)
                    w[j] = weight
                    p[j] *= weight
                }
            }
            for j in (i + 1)..<max(t, i + 1) {
                w[j] = 0
                p[j] = 0
            }
        }
    }

    /// rowsM = Q̃ S̃ [+ P V_c], and the denominators (`denominator`, whose result it returns).
    @discardableResult
    func numerator(_ t: Int, causal: Bool) -> Int {
        favorProduct(rows: t, columns: mv, depth: c, a: s.queryTilde, aRowStride: s.cp, aDepthStride: 1,
                     b: s.state, bRowStride: s.vp, c: s.rowsM, cRowStride: s.vp, accumulate: false)
        let exact = denominator(t, causal: causal)
        if causal {
            favorProduct(rows: t, columns: mv, depth: t, a: s.scores, aRowStride: s.tp, aDepthStride: 1,
                         b: s.values, bRowStride: s.vp, c: s.rowsM, cRowStride: s.vp, accumulate: true)
        }
        return exact
    }

    /// den_i = Q̃_i z̃ [+ Σ_j P_ij] + ε·e^{−U_i}; causal, the chunk scores P first. Returns the
    /// first row whose chunk evaluation is not exact (`exactRows`; t when every row is).
    @discardableResult
    func denominator(_ t: Int, causal: Bool) -> Int {
        let den = s.row(.denominator), unit = s.row(.unit)
        for i in 0..<t { den[i] = rowDot(s.queryTilde + i * s.cp, s.normalizer, c) }
        var first = t
        if causal {
            chunkScores(t)
            for i in 0..<t {
                let p = s.scores + i * s.tp
                var sum: T = 0
                for j in 0...i { sum += p[j] }
                den[i] += sum
            }
            if exponential { first = firstInexactRow(t) }
        }
        if task.epsilon > 0 {
            let logEpsilon = log(task.epsilon)
            for i in 0..<t { den[i] += T(exp(logEpsilon - Double(unit[i]))) }
        }
        return first
    }

    /// The first row (of t) whose causal chunk denominator (before ε) lost its accuracy, or t.
    /// The chunk unit U_i = max(γ_i, ρ_i + r_i) bounds every term, but when the query's and the
    /// keys' large features are different ones every term of the row is far below e^{U_i}:
    /// the row's terms then underflow (at ‖x‖ ~ 30 in float32: inf/NaN or a wrong 0). A row
    /// whose sum is ≥ √(least normal) lost nothing measurable (at most t·C flushed terms, each
    /// < least normal); a row that sees no key (U = −inf) is exact (0). Such rows and the rest
    /// of their chunk are evaluated row by row instead (`exactRow`).
    func firstInexactRow(_ t: Int) -> Int {
        let den = s.row(.denominator), unit = s.row(.unit)
        let floor = T.leastNormalMagnitude.squareRoot()
        for i in 0..<t where unit[i] != -.infinity && !(den[i] >= floor) { return i }
        return t
    }

    /// Whether row i's denominator gives an output: finite, nonzero, and the row sees a key
    /// (or relu). Otherwise the row outputs zeros and gets zero gradients.
    @inline(__always)
    func usable(_ i: Int) -> Bool {
        let den = s.row(.denominator)[i]
        return den.isFinite && den != 0 && s.row(.unit)[i] != -.infinity
    }

    /// o_i = rowsM_i / den_i (or zeros) into rows r0 ..< r0 + t of the output: times 1/den_i,
    /// or a quotient where 1/den overflows (a subnormal den, whose quotient is finite).
    func storeOutputs(_ r0: Int, _ t: Int) {
        let den = s.row(.denominator)
        for i in 0..<t {
            let row = s.rowsM + i * s.vp
            if usable(i) {
                divideRow(row, by: den[i], mv)
            } else {
                for j in 0..<mv { row[j] = 0 }
            }
            storeRow(row, count: mv, into: task.output!, row: r0 + i, accumulate: false)
        }
        if task.rowUnits != nil || task.rowDenominators != nil { storeRowScales(r0, t) }
    }

    /// U_i and den_i of rows r0 ..< r0 + t (the values `storeOutputs` divided by): what a
    /// caller needs to form the initial triple's gradient from the query side (docs/DISTRIBUTED.md).
    func storeRowScales(_ r0: Int, _ t: Int) {
        let den = s.row(.denominator), unit = s.row(.unit)
        for i in 0..<t {
            if let units = task.rowUnits {
                units.base.assumingMemoryBound(to: T.self)[(r0 + i) * units.rowStride] = unit[i]
            }
            if let dens = task.rowDenominators {
                dens.base.assumingMemoryBound(to: T.self)[(r0 + i) * dens.rowStride] = usable(i) ? den[i] : 0
            }
        }
    }

    // MARK: Scaled states

    /// Folds t rows into a scaled state (S, z, shift): row i has log-scale L_if = a_if + ℓ_i
    /// (exponential kinds, `exponents` a) or ℓ_i (others, with features `hat`), ℓ = `logScale`
    /// (−inf: the row takes no part). The shift becomes c′_f = max(c_f, max_i L_if), the state
    /// is rescaled by exp(c − c′), then S += B̄ᵀ X, z += B̄ᵀ y with B̄_if = ν·exp(L_if − c′_f)
    /// (times hat_if for the other kinds) and y = `rowWeights` (nil: ones). Keys build
    /// (S̃, z̃, c) this way from V; queries build (G̃, g̃, e) from ∂L/∂num and ∂L/∂den.
    /// `transposed`: the state is kept as Sᵀ (M × cp), for a sweep that reads only Sᵀ.
    func accumulate(_ t: Int, exponents: UnsafePointer<T>, hat: UnsafePointer<T>, logScale: UnsafePointer<T>,
                    x: UnsafePointer<T>, rowWeights: UnsafePointer<T>?, transposed: Bool = false,
                    state: UnsafeMutablePointer<T>, normalizer: UnsafeMutablePointer<T>, shift: UnsafeMutablePointer<T>) {
        let next = s.newShift
        for f in 0..<c { next[f] = shift[f] }
        for i in 0..<t where logScale[i] != -.infinity {
            let l = logScale[i]
            if exponential {
                let a = exponents + i * s.cp, lv = T.splat(l), end = favorVectorEnd(T.self, c)
                for f in stride(from: 0, to: end, by: T.lanes) {
                    T.store(T.max(T.load(next + f), T.add(T.load(a + f), lv)), next + f)
                }
                for f in end..<c { next[f] = max(next[f], a[f] + l) }
            } else {
                for f in 0..<c { next[f] = max(next[f], l) }
            }
        }
        var rescaled = false
        for f in 0..<c {
            guard next[f] > shift[f] else {
                next[f] = 1
                continue
            }
            let factor: T = shift[f] == -.infinity ? 0 : favorExp(shift[f] - next[f])
            normalizer[f] *= factor
            if !transposed {
                let row = state + f * s.vp
                for j in 0..<mv { row[j] *= factor }
            }
            shift[f] = next[f]
            next[f] = factor
            rescaled = true
        }
        if transposed && rescaled {  // next now holds each feature's factor (1 where c did not grow)
            let end = favorVectorEnd(T.self, c)
            for j in 0..<mv {
                let row = state + j * s.cp
                for f in stride(from: 0, to: end, by: T.lanes) { T.store(T.mul(T.load(row + f), T.load(next + f)), row + f) }
                for f in end..<c { row[f] *= next[f] }
            }
        }
        for i in 0..<t {
            let b = s.bar + i * s.cp, l = logScale[i]
            if l == -.infinity {
                for f in 0..<c { b[f] = 0 }
            } else if exponential {
                let a = exponents + i * s.cp, lv = T.splat(l), nuv = T.splat(nu), end = favorVectorEnd(T.self, c)
                for f in stride(from: 0, to: end, by: T.lanes) {
                    T.store(T.mul(nuv, favorExpVector(T.self, T.sub(T.add(T.load(a + f), lv), T.load(shift + f)))), b + f)
                }
                for f in end..<c { b[f] = nu * favorExp(a[f] + l - shift[f]) }
            } else {
                let h = hat + i * s.cp
                let weight = nu * favorExp(l - shift[0])
                for f in 0..<c { b[f] = weight * h[f] }
            }
        }
        if transposed {
            favorProduct(rows: mv, columns: c, depth: t, a: x, aRowStride: 1, aDepthStride: s.vp,
                         b: s.bar, bRowStride: s.cp, c: state, cRowStride: s.cp, accumulate: true)
        } else {
            favorProduct(rows: c, columns: mv, depth: t, a: s.bar, aRowStride: 1, aDepthStride: s.cp,
                         b: x, bRowStride: s.vp, c: state, cRowStride: s.vp, accumulate: true)
        }
        for i in 0..<t where logScale[i] != -.infinity {
            rowAxpy(rowWeights?[i] ?? 1, s.bar + i * s.cp, normalizer, c)
        }
    }

    /// Folds the prepared key chunk into (S̃, z̃, c); `transposed`: into S̃ᵀ (stateT) instead.
    func accumulateKeys(_ t: Int, transposed: Bool = false) {
        let kappa = s.row(.keyShift), log = s.row(.logScale)
        for j in 0..<t { log[j] = kappa[j] == -.infinity ? -.infinity : (exponential ? 0 : kappa[j]) }
        accumulate(t, exponents: s.keyExponents, hat: s.keyHat, logScale: log, x: s.values, rowWeights: nil,
                   transposed: transposed, state: transposed ? s.stateT : s.state, normalizer: s.normalizer, shift: s.shift)
    }

    /// Loads the initial state (given: causal or a state-only call; else the empty one).
    func loadInitialState() {
        loadState(task.initialS, rows: c, columns: mv, into: s.state, ld: s.vp)
        loadState(task.initialZ, rows: c, columns: 1, into: s.normalizer, ld: 1)
        if let initialC = task.initialC {
            loadState(initialC, rows: c, columns: 1, into: s.shift, ld: 1)
        } else {
            for f in 0..<c { s.shift[f] = emptyShift }
        }
    }

    func storeFinalState() {
        storeState(s.state, rows: c, columns: mv, ld: s.vp, into: task.finalS)
        storeState(s.normalizer, rows: c, columns: 1, ld: 1, into: task.finalZ)
        storeState(s.shift, rows: c, columns: 1, ld: 1, into: task.finalC)
    }
}
