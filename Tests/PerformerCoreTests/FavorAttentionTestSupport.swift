#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

// Shared pieces of the FAVOR+ attention tests: one problem's description and inputs, a float64
// direct reference from materialized mathematical features φ(Q), φ(K) (no stabilizer, no
// chunks), the loss whose finite differences check the backward, and a runner that calls the
// library through (optionally strided) views.

struct FavorCase: CustomStringConvertible {
    var b = 1, h = 1, hk = 1, n = 4, l = 4, d = 3, m = 4, mv = 2
    var causal = false
    var kind: FavorFeatureKind = .positive
    var epsilon = 0.0
    var keyLengths: [Int]? = nil
    var keyStarts: [Int]? = nil
    /// Pass (S̃0, z̃0, c0) and (dS̃_N, dz̃_N), ask for the final state and dS̃0, dz̃0 (causal: the
    /// state carried in; bidirectional: a memory every query sees).
    var withState = false
    var strided = false
    /// Standard deviation of the q, k entries.
    var inputScale = 0.7
    var seed: UInt64 = 1

    var c: Int { kind.featureCount(numFeatures: m) }
    var options: FavorAttentionOptions {
        FavorAttentionOptions(causal: causal, features: FavorFeatureOptions(kind: kind), epsilon: epsilon, keyLengths: keyLengths,
                              keyStarts: keyStarts)
    }
    var qShape: SIMD4<Int> { SIMD4(b, h, n, d) }
    var kShape: SIMD4<Int> { SIMD4(b, hk, l, d) }
    var vShape: SIMD4<Int> { SIMD4(b, hk, l, mv) }
    var oShape: SIMD4<Int> { SIMD4(b, h, n, mv) }
    var sShape: SIMD4<Int> { SIMD4(b, h, c, mv) }
    var zShape: SIMD4<Int> { SIMD4(b, h, c, 1) }
    var hasState: Bool { withState }
    var description: String {
        "B\(b) H\(h) Hk\(hk) N\(n) L\(l) D\(d) m\(m) M\(mv) causal=\(causal) \(kind.name) eps=\(epsilon) kv=\(keyLengths.map { "\($0)" } ?? "-") starts=\(keyStarts.map { "\($0)" } ?? "-") state=\(withState) strided=\(strided) sd=\(inputScale)"
    }
}

struct FavorInputs {
    var q, k, v, dout: [Double]
    var s0, z0, c0, dsN, dzN: [Double]

    /// Random inputs; the initial state is a plausible one: the mathematical state of `prefix`
    /// random keys, stored scaled with random shifts (one per head for trigonometric, 0 for relu).
    init(_ fc: FavorCase, projection: FavorProjection, prefix: Int = 3) {
        var random = LinearTestRandom(seed: fc.seed)
        let sd = fc.inputScale
        q = random.array(fc.b * fc.h * fc.n * fc.d).map { $0 * sd }
        k = random.array(fc.b * fc.hk * fc.l * fc.d).map { $0 * sd }
        v = random.array(fc.b * fc.hk * fc.l * fc.mv)
        dout = random.array(fc.b * fc.h * fc.n * fc.mv)
        let c = fc.c
        s0 = [Double](repeating: 0, count: fc.b * fc.h * c * fc.mv)
        z0 = [Double](repeating: 0, count: fc.b * fc.h * c)
        c0 = [Double](repeating: 0, count: fc.b * fc.h * c)
        for head in 0..<(fc.b * fc.h) {
            let headShift = random.normal() * 0.5
            for f in 0..<c {
                switch fc.kind {
                case .relu: c0[head * c + f] = 0
                case .trigonometric: c0[head * c + f] = headShift
                default: c0[head * c + f] = random.normal() * 0.5
                }
            }
            for _ in 0..<prefix {
                let key = random.array(fc.d).map { $0 * sd }
                let value = random.array(fc.mv)
                let phi = referenceFeatures(key, projection, kind: fc.kind)
                for f in 0..<c {
                    let scale = exp(-c0[head * c + f])
                    z0[head * c + f] += phi[f] * scale
                    for j in 0..<fc.mv { s0[(head * c + f) * fc.mv + j] += phi[f] * value[j] * scale }
                }
            }
        }
        dsN = random.array(fc.b * fc.h * c * fc.mv)
        dzN = random.array(fc.b * fc.h * c)
    }

    func rounded<T: AttentionScalar>(to _: T.Type) -> FavorInputs {
        var copy = self
        let r: ([Double]) -> [Double] = { $0.map { Double(T($0)) } }
        copy.q = r(q); copy.k = r(k); copy.v = r(v); copy.dout = r(dout)
        copy.s0 = r(s0); copy.z0 = r(z0); copy.c0 = r(c0); copy.dsN = r(dsN); copy.dzN = r(dzN)
        return copy
    }
}

/// Outputs and the mathematical final state (S_N = diag(e^c)·S̃_N, z_N = e^c ∘ z̃_N).
struct FavorForwardResult {
    var out: [Double]
    var sN: [Double]
    var zN: [Double]
}

/// The float64 direct evaluation of ALGORITHMS.md §3: materialized φ(q_i), φ(k_j) (zero for
/// padded keys), A_ij = φ(q_i)·φ(k_j) over the visible pairs, o_i = (φ(q_i)ᵀS_0 + Σ_j A_ij v_j) /
/// (φ(q_i)ᵀz_0 + Σ_j A_ij + ε), a zero row when that denominator is 0 or not finite.
func favorReference(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection) -> FavorForwardResult {
    let (n, l, d, mv, c) = (fc.n, fc.l, fc.d, fc.mv, fc.c)
    var r = FavorForwardResult(out: .init(repeating: 0, count: fc.b * fc.h * n * mv),
                               sN: .init(repeating: 0, count: fc.b * fc.h * c * mv), zN: .init(repeating: 0, count: fc.b * fc.h * c))
    let group = fc.h / fc.hk
    for b in 0..<fc.b {
        let limit = fc.keyLengths?[b] ?? l, start = fc.keyStarts?[b] ?? 0
        for h in 0..<fc.h {
            let hk = h / group
            let head = b * fc.h + h
            let fq = (0..<n).map { i in referenceFeatures(Array(x.q[((head * n + i) * d)..<((head * n + i + 1) * d)]), w, kind: fc.kind) }
            let fk = (0..<l).map { j -> [Double] in
                guard (start..<limit).contains(j) else { return [Double](repeating: 0, count: c) }
                let base = ((b * fc.hk + hk) * l + j) * d
                return referenceFeatures(Array(x.k[base..<(base + d)]), w, kind: fc.kind)
            }
            var s = [Double](repeating: 0, count: c * mv), z = [Double](repeating: 0, count: c)
            if fc.hasState {
                for f in 0..<c {
                    let scale = exp(x.c0[head * c + f])
                    z[f] = x.z0[head * c + f] * scale
                    for j in 0..<mv { s[f * mv + j] = x.s0[(head * c + f) * mv + j] * scale }
                }
            }
            for i in 0..<n {
                var num = (0..<mv).map { j in (0..<c).reduce(0.0) { $0 + fq[i][$1] * s[$1 * mv + j] } }
                var den = (0..<c).reduce(0.0) { $0 + fq[i][$1] * z[$1] } + fc.epsilon
                for key in 0..<l where key < limit && key >= start && (!fc.causal || key <= i) {
                    let a = (0..<c).reduce(0.0) { $0 + fq[i][$1] * fk[key][$1] }
                    den += a
                    let vBase = ((b * fc.hk + hk) * l + key) * mv
                    for j in 0..<mv { num[j] += a * x.v[vBase + j] }
                }
                guard den != 0, den.isFinite else { continue }
                for j in 0..<mv { r.out[(head * n + i) * mv + j] = num[j] / den }
            }
            for key in 0..<min(l, limit) {
                let vBase = ((b * fc.hk + hk) * l + key) * mv
                for f in 0..<c {
                    z[f] += fk[key][f]
                    for j in 0..<mv { s[f * mv + j] += fk[key][f] * x.v[vBase + j] }
                }
            }
            for f in 0..<c {
                r.zN[head * c + f] = z[f]
                for j in 0..<mv { r.sN[(head * c + f) * mv + j] = s[f * mv + j] }
            }
        }
    }
    return r
}

/// The scalar loss the backward differentiates: Σ dO·o + Σ dS̃_N·(e^{−c_ref} S_N) + Σ dz̃_N·(e^{−c_ref} z_N),
/// with c_ref the library's final shift at the base point held fixed (c carries no gradient).
func favorLoss(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, shiftReference: [Double]) -> Double {
    let r = favorReference(fc, x, w)
    var loss = zip(r.out, x.dout).reduce(0) { $0 + $1.0 * $1.1 }
    if fc.hasState {
        let mv = fc.mv
        for row in 0..<(fc.b * fc.h * fc.c) {
            let scale = exp(-shiftReference[row])
            loss += x.dzN[row] * r.zN[row] * scale
            for j in 0..<mv { loss += x.dsN[row * mv + j] * r.sN[row * mv + j] * scale }
        }
    }
    return loss
}

struct FavorLibraryResult {
    var out: [Double]
    /// Final state as returned (scaled) and as the mathematical state e^c ∘ S̃.
    var sTilde: [Double], zTilde: [Double], cN: [Double]
    var sN: [Double], zN: [Double]
    var dq: [Double], dk: [Double], dv: [Double], ds0: [Double], dz0: [Double]
}

/// The library's forward (and, with `backward`, backward) in precision T.
func runFavor<T: AttentionScalar>(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, as _: T.Type, backward: Bool = true,
                                  file: StaticString = #filePath, line: UInt = #line) throws -> FavorLibraryResult {
    let t = FavorCallTensors<LinearTestTensor<T>, LinearTestTensor<T>>(fc, x)
    let state = fc.hasState
    try FavorAttention.forward(
        query: t.q.view, key: t.k.view, value: t.v.view, projection: w, output: t.out.mutableView,
        initialState: state ? t.initialState : nil, finalState: state ? t.finalState : nil, options: fc.options)
    if backward {
        try FavorAttention.backward(
            query: t.q.view, key: t.k.view, value: t.v.view, projection: w, outputGradient: t.dout.view,
            queryGradient: t.dq.mutableView, keyGradient: t.dk.mutableView, valueGradient: t.dv.mutableView,
            initialState: state ? t.initialState : nil, finalStateGradient: state ? t.finalStateGradient : nil,
            initialStateGradient: state ? t.initialStateGradient : nil, options: fc.options)
    }
    t.checkPadding(fc, file: file, line: line)
    let (sN, zN, cN, out, dq, dk, dv, ds0, dz0) = (t.sN, t.zN, t.cN, t.out, t.dq, t.dk, t.dv, t.ds0, t.dz0)
    let shifts = cN.values
    let mathS = sN.values.enumerated().map { $0.element == 0 ? 0 : $0.element * exp(shifts[$0.offset / fc.mv]) }
    let mathZ = zip(zN.values, shifts).map { $0 == 0 ? 0 : $0 * exp($1) }
    return FavorLibraryResult(out: out.values, sTilde: sN.values, zTilde: zN.values, cN: shifts, sN: mathS, zN: mathZ,
                              dq: dq.values, dk: dk.values, dv: dv.values, ds0: ds0.values, dz0: dz0.values)
}

/// Central differences of `favorLoss` in float64 with respect to every entry of q, k, v and
/// (with state) S̃0, z̃0: (dq, dk, dv, dS̃0, dz̃0).
func favorFiniteDifferences(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, shiftReference: [Double])
    -> [[Double]] {
    func gradient(_ keyPath: WritableKeyPath<FavorInputs, [Double]>) -> [Double] {
        var probe = x
        return (0..<x[keyPath: keyPath].count).map { index in
            let original = x[keyPath: keyPath][index]
            let step = 1e-6 * max(1, abs(original))
            probe[keyPath: keyPath][index] = original + step
            let plus = favorLoss(fc, probe, w, shiftReference: shiftReference)
            probe[keyPath: keyPath][index] = original - step
            let minus = favorLoss(fc, probe, w, shiftReference: shiftReference)
            probe[keyPath: keyPath][index] = original
            return (plus - minus) / (2 * step)
        }
    }
    var result = [gradient(\.q), gradient(\.k), gradient(\.v)]
    if fc.hasState {
        result += [gradient(\.s0), gradient(\.z0)]
    } else {
        result += [[Double](repeating: 0, count: x.s0.count), [Double](repeating: 0, count: x.z0.count)]
    }
    return result
}

/// Inputs whose q, k rows have norm exactly `norm` (directions random).
func normalizedRows(_ values: [Double], width: Int, norm: Double) -> [Double] {
    var out = values
    for r in 0..<(values.count / width) {
        let length = values[(r * width)..<((r + 1) * width)].reduce(0) { $0 + $1 * $1 }.squareRoot()
        for c in 0..<width { out[r * width + c] *= norm / length }
    }
    return out
}
