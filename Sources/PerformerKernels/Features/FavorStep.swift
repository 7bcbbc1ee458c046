#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

// One recurrent FAVOR+ step per head in the scaled form of docs/FAVOR.md §4 ("Decoder step"):
// the key is folded into (S̃, z̃, c) with a per-feature running max c, then the query reads the
// state with the shift γ = max_f (a_f(q) + c_f), so the denominator is never below ν².
//
// On SIMD, in the element type T (the attention kernels' precision):
//   1. x̂_q, x̂_k = x·s^(1/2) and [u_q; u_k] = [x̂_q; x̂_k]·Wᵀ as one two-row matrix-vector product
//      over the decoder's packed Wᵀ (D × m), accumulators in registers;
//   2. per feature (vectors over C): the key's new shift c′ = max(c, a_k), its rescale factor
//      exp(c − c′) (exactly 1 where c did not grow), its weight ν·exp(a_k − c′), and the
//      query's Q̃ = ν·exp(a_q + c′ − γ), all with the vector exp2 (exactly 0 for −inf);
//   3. one fused sweep over S̃: S̃_f ← factor_f·S̃_f + weight_f·vᵀ and num += Q̃_f·S̃_f, the
//      value vector and the numerator in registers, M in blocks of four vectors.
// ‖x̂‖², the denominator and ε·e^{−γ} are scalars in float64. Trigonometric and relu features
// fill the same per-feature arrays (factor, weight, Q̃) with scalar code and share sweep 3.

/// Scratch of one group call, in elements of T, each array padded to whole vectors:
/// halves (2G float64: n/2 of query and key of every head), x̂ (2G × D: rows 2i = query,
/// 2i + 1 = key of head i), U (2G × m, the same rows), and the per-head arrays factor,
/// weight, Q̃ (C each), reused head after head.
private struct StepScratch<T: KernelScalar> {
    let halves: UnsafeMutablePointer<Double>
    let xHat, u, factor, weight, query: UnsafeMutablePointer<T>
    /// Row strides of x̂ and U.
    let xStride, uStride: Int

    init(_ base: UnsafeMutableRawPointer, dim d: Int, numFeatures m: Int, group g: Int) {
        let layout = StepScratchLayout(dim: d, numFeatures: m, group: g, elementSize: MemoryLayout<T>.stride)
        halves = base.bindMemory(to: Double.self, capacity: 2 * g)
        let p = (base + layout.halvesBytes).bindMemory(to: T.self, capacity: layout.elements)
        (xStride, uStride) = (layout.xStride, layout.uStride)
        xHat = p
        u = xHat + 2 * g * xStride
        factor = u + 2 * g * uStride
        weight = factor + layout.featureStride
        query = weight + layout.featureStride
    }
}

/// Sizes of `StepScratch`, padded to 64 bytes (a whole vector of every ISA).
/// Measured with saturating arithmetic (`bytes`); the Int fields are exact whenever `bytes`
/// is not saturated, which is the only case in which a task runs.
private struct StepScratchLayout {
    let halvesBytes, xStride, uStride, featureStride, elements: Int
    /// halvesBytes + elements · elementSize.
    let bytes: ScratchSize

    init(dim d: Int, numFeatures m: Int, group g: Int, elementSize: Int) {
        let lanes = 64 / elementSize
        func padded(_ n: ScratchSize) -> ScratchSize { Swift.max(n, 1).roundedUp(to: lanes) }
        let halves = (2 * ScratchSize(g) * 8).roundedUp(to: 64)
        let x = padded(ScratchSize(d)), u = padded(ScratchSize(m)), feature = padded(2 * ScratchSize(m))
        let count = 2 * ScratchSize(g) * (x + u) + 3 * feature
        (halvesBytes, xStride, uStride, featureStride) = (halves.value, x.value, u.value, feature.value)
        elements = count.value
        bytes = halves + count * elementSize
    }
}

/// x̂ = x·σ into `xHat` (contiguous); returns ‖x̂‖² accumulated in float64.
@inline(__always)
private func scaleInput<T: KernelScalar>(
    _ x: UnsafeRawPointer, stride: Int, dim d: Int, sigma: Double, into xHat: UnsafeMutablePointer<T>
) -> Double {
    let source = x.assumingMemoryBound(to: T.self)
    let s = T(sigma)
    var n = 0.0
    for c in 0..<d {
        let value = source[c * stride] * s
        xHat[c] = value
        n += Double(value) * Double(value)
    }
    return n
}

/// u_q = Wᵀ-product of x̂_q and u_k of x̂_k: u[f] = Σ_c x̂[c]·Wᵀ[c][f], Wᵀ D × m row-major.
@inline(__always)
private func projectPair<T: KernelScalar>(
    wt: UnsafePointer<T>, dim d: Int, numFeatures m: Int,
    xq: UnsafePointer<T>, xk: UnsafePointer<T>, uq: UnsafeMutablePointer<T>, uk: UnsafeMutablePointer<T>
) {
    let w = T.lanes
    var f = 0
    while f + 4 * w <= m {
        var q0 = T.splat(0), q1 = q0, q2 = q0, q3 = q0, k0 = q0, k1 = q0, k2 = q0, k3 = q0
        var row = wt + f
        for c in 0..<d {
            let w0 = T.load(row), w1 = T.load(row + w), w2 = T.load(row + 2 * w), w3 = T.load(row + 3 * w)
            let a = T.splat(xq[c]), b = T.splat(xk[c])
            q0 = T.fma(a, w0, q0); q1 = T.fma(a, w1, q1); q2 = T.fma(a, w2, q2); q3 = T.fma(a, w3, q3)
            k0 = T.fma(b, w0, k0); k1 = T.fma(b, w1, k1); k2 = T.fma(b, w2, k2); k3 = T.fma(b, w3, k3)
            row += m
        }
        T.store(q0, uq + f); T.store(q1, uq + f + w); T.store(q2, uq + f + 2 * w); T.store(q3, uq + f + 3 * w)
        T.store(k0, uk + f); T.store(k1, uk + f + w); T.store(k2, uk + f + 2 * w); T.store(k3, uk + f + 3 * w)
        f += 4 * w
    }
    while f + w <= m {
        var q0 = T.splat(0), k0 = q0
        var row = wt + f
        for c in 0..<d {
            let w0 = T.load(row)
            q0 = T.fma(T.splat(xq[c]), w0, q0)
            k0 = T.fma(T.splat(xk[c]), w0, k0)
            row += m
        }
        T.store(q0, uq + f)
        T.store(k0, uk + f)
        f += w
    }
    while f < m {
        var sq: T = 0, sk: T = 0
        for c in 0..<d {
            sq += xq[c] * wt[c * m + f]
            sk += xk[c] * wt[c * m + f]
        }
        uq[f] = sq
        uk[f] = sk
        f += 1
    }
}

/// Exponent a_f of feature f from u: u_f − h (f < m) or −u_{f−m} − h (hyperbolic, f ≥ m).
@inline(__always)
private func exponentVector<T: KernelScalar>(_ u: UnsafePointer<T>, _ f: Int, m: Int, half: T.Vector) -> T.Vector {
    f < m ? T.sub(T.load(u + f), half) : T.sub(T.sub(T.splat(0), T.load(u + f - m)), half)
}

@inline(__always)
private func exponentScalar<T: KernelScalar>(_ u: UnsafePointer<T>, _ f: Int, m: Int, half: T) -> T {
    f < m ? u[f] - half : -u[f - m] - half
}

/// Positive and hyperbolic: the key's factor and weight, the new shifts, and the query's Q̃
/// (into scratch); returns γ.
@inline(__always)
private func exponentialWeights<T: KernelScalar>(
    _ s: StepScratch<T>, uq: UnsafePointer<T>, uk: UnsafePointer<T>, shift: UnsafeMutablePointer<T>, numFeatures m: Int, featureCount count: Int,
    keyHalf: T, queryHalf: T, nu: T
) -> T {
    let w = T.lanes
    // Vectors stay inside one half (u or −u) when m is a multiple of the lanes; otherwise scalar.
    let vectorEnd = m % w == 0 ? count : 0
    let log2e = T.splat(T.log2e), one = T.splat(1), nuV = T.splat(nu)
    let kh = T.splat(keyHalf), qh = T.splat(queryHalf)
    var gammaV = T.splat(-.infinity)
    var f = 0
    while f < vectorEnd {
        let a = exponentVector(uk, f, m: m, half: kh)
        let old = T.load(shift + f)
        let new = T.max(old, a)
        // exp(c − c′) where c grew (0 from −inf), exactly 1 where it did not.
        T.store(T.selectLess(old, new, T.exp2(T.mul(T.sub(old, new), log2e)), one), s.factor + f)
        T.store(T.mul(nuV, T.exp2(T.mul(T.sub(a, new), log2e))), s.weight + f)
        T.store(new, shift + f)
        let qa = T.add(exponentVector(uq, f, m: m, half: qh), new)
        T.store(qa, s.query + f)
        gammaV = T.max(gammaV, qa)
        f += w
    }
    var gamma = T.maxAcross(gammaV)
    while f < count {
        let a = exponentScalar(uk, f, m: m, half: keyHalf)
        let old = shift[f]
        let new = Swift.max(old, a)
        s.factor[f] = old < new ? T(exp(Double(old - new))) : 1
        s.weight[f] = nu * T(exp(Double(a - new)))
        shift[f] = new
        let qa = exponentScalar(uq, f, m: m, half: queryHalf) + new
        s.query[f] = qa
        gamma = Swift.max(gamma, qa)
        f += 1
    }
    let g = T.splat(gamma)
    f = 0
    while f + w <= count {
        T.store(T.mul(nuV, T.exp2(T.mul(T.sub(T.load(s.query + f), g), log2e))), s.query + f)
        f += w
    }
    while f < count {
        s.query[f] = nu * T(exp(Double(s.query[f] - gamma)))
        f += 1
    }
    return gamma
}

/// `lanes` elements of x from index j, `stride` apart.
@inline(__always)
private func loadStrided<T: KernelScalar>(_ x: UnsafePointer<T>, _ j: Int, stride: Int) -> T.Vector {
    if stride == 1 { return T.load(x + j) }
    var v = T.splat(0)
    for l in 0..<T.lanes { v[l] = x[(j + l) * stride] }
    return v
}

/// S̃_f ← factor_f·S̃_f + weight_f·vᵀ for every f, num = Σ_f Q̃_f·S̃_f (new S̃), and
/// out = num/den (float64 division; 0 when the denominator is unusable).
@inline(__always)
private func foldAndRead<T: KernelScalar>(
    _ s: StepScratch<T>, state: UnsafeMutablePointer<T>, rows count: Int, valueDim mv: Int,
    value: UnsafePointer<T>, valueStride: Int, output: UnsafeMutablePointer<T>, outputStride: Int, den: Double
) {
    let w = T.lanes
    // An underflowed (or otherwise unusable) denominator gives a zero row, never NaN or Inf.
    let usable = den != 0 && den.isFinite
    @inline(__always) func put(_ n: T.Vector, _ j: Int) {
        for l in 0..<w { output[(j + l) * outputStride] = usable ? T(Double(n[l]) / den) : 0 }
    }
    var j = 0
    while j + 4 * w <= mv {
        let v0 = loadStrided(value, j, stride: valueStride), v1 = loadStrided(value, j + w, stride: valueStride)
        let v2 = loadStrided(value, j + 2 * w, stride: valueStride), v3 = loadStrided(value, j + 3 * w, stride: valueStride)
        var n0 = T.splat(0), n1 = n0, n2 = n0, n3 = n0
        var row = state + j
        for f in 0..<count {
            let factor = T.splat(s.factor[f]), weight = T.splat(s.weight[f]), q = T.splat(s.query[f])
            let s0 = T.fma(weight, v0, T.mul(factor, T.load(row)))
            let s1 = T.fma(weight, v1, T.mul(factor, T.load(row + w)))
            let s2 = T.fma(weight, v2, T.mul(factor, T.load(row + 2 * w)))
            let s3 = T.fma(weight, v3, T.mul(factor, T.load(row + 3 * w)))
            T.store(s0, row); T.store(s1, row + w); T.store(s2, row + 2 * w); T.store(s3, row + 3 * w)
            n0 = T.fma(q, s0, n0); n1 = T.fma(q, s1, n1); n2 = T.fma(q, s2, n2); n3 = T.fma(q, s3, n3)
            row += mv
        }
        put(n0, j); put(n1, j + w); put(n2, j + 2 * w); put(n3, j + 3 * w)
        j += 4 * w
    }
    while j + w <= mv {
        let v0 = loadStrided(value, j, stride: valueStride)
        var n0 = T.splat(0)
        var row = state + j
        for f in 0..<count {
            let s0 = T.fma(T.splat(s.weight[f]), v0, T.mul(T.splat(s.factor[f]), T.load(row)))
            T.store(s0, row)
            n0 = T.fma(T.splat(s.query[f]), s0, n0)
            row += mv
        }
        put(n0, j)
        j += w
    }
    while j < mv {
        let vj = value[j * valueStride]
        var total: T = 0
        for f in 0..<count {
            let p = state + f * mv + j
            p.pointee = s.factor[f] * p.pointee + s.weight[f] * vj
            total += s.query[f] * p.pointee
        }
        output[j * outputStride] = usable ? T(Double(total) / den) : 0
        j += 1
    }
}

/// Steps heads `tasks[0 ..< count]` (one group; see `FavorStepKernels`).
func favorStepGroup<T: KernelScalar>(_ tasks: UnsafePointer<FavorStepTask>, _ count: Int, _: T.Type) {
    guard count > 0 else { return }
    let t0 = tasks[0]
    let d = t0.dim, m = t0.numFeatures
    let s = StepScratch<T>(t0.scratch, dim: d, numFeatures: m, group: count)
    let wt = t0.projection.assumingMemoryBound(to: T.self)
    for i in 0..<count {
        let t = tasks[i]
        s.halves[2 * i] = scaleInput(t.query, stride: t.queryStride, dim: d, sigma: t.inputScale,
                                     into: s.xHat + 2 * i * s.xStride) / 2
        s.halves[2 * i + 1] = scaleInput(t.key, stride: t.keyStride, dim: d, sigma: t.inputScale,
                                         into: s.xHat + (2 * i + 1) * s.xStride) / 2
    }
    // U = X̂·Wᵀ for the 2G rows: one product, W streamed once per group.
    if m % microKernelColumns(T.self) == 0 {
        blockProduct(rows: 2 * count, columns: m, depth: d, a: s.xHat, aRowStride: s.xStride, aDepthStride: 1,
                     b: wt, bRowStride: m, c: s.u, cRowStride: s.uStride, accumulate: false)
    } else {
        for i in 0..<count {
            projectPair(wt: wt, dim: d, numFeatures: m, xq: s.xHat + 2 * i * s.xStride,
                        xk: s.xHat + (2 * i + 1) * s.xStride, uq: s.u + 2 * i * s.uStride,
                        uk: s.u + (2 * i + 1) * s.uStride)
        }
    }
    for i in 0..<count {
        favorStepHead(tasks[i], s, uq: s.u + 2 * i * s.uStride, uk: s.u + (2 * i + 1) * s.uStride,
                      queryHalf: s.halves[2 * i], keyHalf: s.halves[2 * i + 1])
    }
}

/// One head once u_q, u_k and the half norms are known: weights, shifts, state, output.
@inline(__always)
private func favorStepHead<T: KernelScalar>(
    _ t: FavorStepTask, _ s: StepScratch<T>, uq: UnsafePointer<T>, uk: UnsafePointer<T>,
    queryHalf: Double, keyHalf: Double
) {
    let m = t.numFeatures, mv = t.valueDim
    let count = t.map.featureCount(numFeatures: m)
    let stateS = t.stateS.assumingMemoryBound(to: T.self)
    let z = t.stateZ.assumingMemoryBound(to: T.self)
    let shift = t.stateC.assumingMemoryBound(to: T.self)
    let nu = t.map == .hyperbolic ? 1 / Double(2 * m).squareRoot() : 1 / Double(m).squareRoot()

    // Per-feature key factor and weight, new shifts, the query's Q̃, and ε in scaled units.
    var epsilonTerm = 0.0
    switch t.map {
    case .positive, .hyperbolic:
        let gamma = exponentialWeights(s, uq: uq, uk: uk, shift: shift, numFeatures: m, featureCount: count,
                                       keyHalf: T(keyHalf), queryHalf: T(queryHalf), nu: T(nu))
        if t.epsilon > 0 { epsilonTerm = exp(log(t.epsilon) - Double(gamma)) }
    case .trigonometric:
        let old = Double(shift[0])
        let new = Double(T(max(old, keyHalf)))
        let factor: T = new > old ? (old == -.infinity ? 0 : T(exp(old - new))) : 1
        for f in 0..<count { shift[f] = T(new) }
        let weight = exp(keyHalf - new) / Double(m).squareRoot()
        let rootM = Double(m).squareRoot()
        for f in 0..<m {
            let keyU = Double(uk[f]), queryU = Double(uq[f])
            s.factor[f] = factor
            s.factor[m + f] = factor
            s.weight[f] = T(weight * sin(keyU))
            s.weight[m + f] = T(weight * cos(keyU))
            s.query[f] = T(sin(queryU) / rootM)
            s.query[m + f] = T(cos(queryU) / rootM)
        }
        if t.epsilon > 0 { epsilonTerm = exp(log(t.epsilon) - queryHalf - new) }
    case .relu:
        let kappa = T(t.reluOffset)
        for f in 0..<m {
            s.factor[f] = 1
            s.weight[f] = max(uk[f], 0) + kappa
            s.query[f] = max(uq[f], 0) + kappa
        }
        epsilonTerm = t.epsilon
    }

    // z̃ and the denominator (float64), then S̃ and the numerator in one sweep.
    var den = epsilonTerm
    for f in 0..<count {
        let updated = s.factor[f] * z[f] + s.weight[f]
        z[f] = updated
        den += Double(s.query[f]) * Double(updated)
    }
    foldAndRead(s, state: stateS, rows: count, valueDim: mv, value: t.value.assumingMemoryBound(to: T.self),
                valueStride: t.valueStride, output: t.output.assumingMemoryBound(to: T.self),
                outputStride: t.outputStride, den: den)
}

func makeFavorStepKernels() -> FavorStepKernels {
    FavorStepKernels(
        maxGroup: 16,
        scratchBytes: { d, m, elementSize, group in
            StepScratchLayout(dim: d, numFeatures: m, group: group, elementSize: elementSize).bytes.value
        },
        stepFloat: { favorStepGroup($0, $1, Float.self) },
        stepDouble: { favorStepGroup($0, $1, Double.self) })
}
