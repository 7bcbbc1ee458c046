import Foundation
import PerformerCore
import XCTest

/// φ(x) of one row and, given dφ, the row's dx, straight from ALGORITHMS.md §3 in R arithmetic
/// (every product and sum rounded to R; exp, sin, cos in float64 and rounded): R = Double is
/// the exact reference of the half-precision tests, R = Float the straightforward float32
/// evaluation they compare against. Default scale 1/√D, relu offset 1e-3, no stabilizer.
func favorRow<R: BinaryFloatingPoint>(_ x: [R], _ w: FavorProjection, kind: FavorFeatureKind,
                                      featureGradient g: [R]? = nil) -> (phi: [R], dx: [R]) {
    let d = w.dim, m = w.numFeatures
    let root = R((1 / Double(d).squareRoot()).squareRoot())
    let xHat = x.map { $0 * root }
    let n = xHat.reduce(R(0)) { $0 + $1 * $1 }
    let u = (0..<m).map { i in (0..<d).reduce(R(0)) { $0 + R(w[i, $1]) * xHat[$1] } }
    let e: (R) -> R = { R(exp(Double($0))) }
    let rootM = R(Double(m).squareRoot()), root2M = R((2 * Double(m)).squareRoot())
    var phi: [R]
    switch kind {
    case .positive: phi = u.map { e($0 - n / 2) / rootM }
    case .hyperbolic: phi = u.map { e($0 - n / 2) / root2M } + u.map { e(-$0 - n / 2) / root2M }
    case .trigonometric:
        phi = u.map { e(n / 2) * R(sin(Double($0))) / rootM } + u.map { e(n / 2) * R(cos(Double($0))) / rootM }
    case .relu: phi = u.map { max($0, 0) + R(1e-3) }
    }
    guard let g else { return (phi, []) }
    // dx = √s Σ_f g_f ∂φ_f/∂x̂.
    var dxHat = [R](repeating: 0, count: d)
    func add(_ coefficient: R, row i: Int, sign: R, xHatCoefficient: R) {
        for t in 0..<d { dxHat[t] += coefficient * (sign * R(w[i, t])) + xHatCoefficient * xHat[t] }
    }
    for i in 0..<m {
        switch kind {
        case .positive: add(g[i] * phi[i], row: i, sign: 1, xHatCoefficient: -g[i] * phi[i])
        case .hyperbolic:
            add(g[i] * phi[i], row: i, sign: 1, xHatCoefficient: -g[i] * phi[i])
            add(g[m + i] * phi[m + i], row: i, sign: -1, xHatCoefficient: -g[m + i] * phi[m + i])
        case .trigonometric:
            let scale = e(n / 2) / rootM, sine = R(sin(Double(u[i]))), cosine = R(cos(Double(u[i])))
            add(g[i] * scale * cosine, row: i, sign: 1, xHatCoefficient: g[i] * phi[i])
            add(g[m + i] * scale * sine, row: i, sign: -1, xHatCoefficient: g[m + i] * phi[m + i])
        case .relu: if u[i] > 0 { add(g[i], row: i, sign: 1, xHatCoefficient: 0) }
        }
    }
    return (phi, dxHat.map { $0 * root })
}

/// FAVOR+ forward and backward (no state) by materialized features and the explicit N × L
/// matrix A_ij = φ(q_i)·φ(k_j) over the visible pairs, in R arithmetic (see `favorRow`):
/// o_i = Σ_j A_ij v_j / (Σ_j A_ij + ε) (zero row when that is 0), dA_ij = dO_i·(v_j − o_i)/den_i.
func favorExplicit<R: BinaryFloatingPoint>(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, arithmetic _: R.Type)
    -> (out: [Double], dq: [Double], dk: [Double], dv: [Double]) {
    let (n, l, d, mv, c) = (fc.n, fc.l, fc.d, fc.mv, fc.c)
    var out = [Double](repeating: 0, count: fc.b * fc.h * n * mv), dq = [Double](repeating: 0, count: x.q.count)
    var dk = [R](repeating: 0, count: x.k.count), dv = [R](repeating: 0, count: x.v.count)
    let group = fc.h / fc.hk
    let row: ([Double], Int, Int) -> [R] = { values, index, width in values[(index * width)..<((index + 1) * width)].map { R($0) } }
    for b in 0..<fc.b {
        let limit = fc.keyLengths?[b] ?? l, start = fc.keyStarts?[b] ?? 0
        for h in 0..<fc.h {
            let head = b * fc.h + h, keyHead = b * fc.hk + h / group
            let fq = (0..<n).map { favorRow(row(x.q, head * n + $0, d), w, kind: fc.kind).phi }
            let fk = (0..<l).map { favorRow(row(x.k, keyHead * l + $0, d), w, kind: fc.kind).phi }
            let v = (0..<l).map { row(x.v, keyHead * l + $0, mv) }
            func visible(_ i: Int, _ j: Int) -> Bool { j >= start && j < limit && (!fc.causal || j <= i) }
            var dfk = [[R]](repeating: [R](repeating: 0, count: c), count: l)
            for i in 0..<n {
                let dout = row(x.dout, head * n + i, mv)
                var a = [R](repeating: 0, count: l)
                var num = [R](repeating: 0, count: mv), den = R(0)
                for j in 0..<l where visible(i, j) {
                    a[j] = (0..<c).reduce(R(0)) { $0 + fq[i][$1] * fk[j][$1] }
                    den += a[j]
                    for t in 0..<mv { num[t] += a[j] * v[j][t] }
                }
                den += R(fc.epsilon)
                guard den != 0 else { continue }
                let o = num.map { $0 / den }
                for t in 0..<mv { out[(head * n + i) * mv + t] = Double(o[t]) }
                var dfq = [R](repeating: 0, count: c)
                for j in 0..<l where visible(i, j) {
                    let da = (0..<mv).reduce(R(0)) { $0 + dout[$1] * (v[j][$1] - o[$1]) } / den
                    for f in 0..<c { dfq[f] += da * fk[j][f]; dfk[j][f] += da * fq[i][f] }
                    for t in 0..<mv { dv[(keyHead * l + j) * mv + t] += a[j] * dout[t] / den }
                }
                let gradient = favorRow(row(x.q, head * n + i, d), w, kind: fc.kind, featureGradient: dfq).dx
                for t in 0..<d { dq[(head * n + i) * d + t] = Double(gradient[t]) }
            }
            for j in 0..<l where j >= start && j < limit {
                let gradient = favorRow(row(x.k, keyHead * l + j, d), w, kind: fc.kind, featureGradient: dfk[j]).dx
                for t in 0..<d { dk[(keyHead * l + j) * d + t] += gradient[t] }
            }
        }
    }
    return (out, dq, dk.map { Double($0) }, dv.map { Double($0) })
}

extension FavorInputs {
    /// What a half call sees: q, k, v, dout rounded to H (through float32), states to float32.
    func roundedToHalf<H: HalfTestScalar>(_: H.Type) -> FavorInputs {
        var copy = rounded(to: Float.self)
        let half: ([Double]) -> [Double] = { $0.map { Double(H(rounding: Float($0)).float) } }
        copy.q = half(q); copy.k = half(k); copy.v = half(v); copy.dout = half(dout)
        return copy
    }
}

/// The library's half-precision FAVOR+ forward and backward: q, k, v, dout, out, dq, dk, dv in
/// H, the state (S̃, z̃, c), its gradients float32. Returns every result's values (out, dq, dk,
/// dv, S̃_N, z̃_N, c_N, dS̃0, dz̃0), as the float32 call's runner `runFavor` lists them.
func runFavorHalf<H: HalfTestScalar>(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, as _: H.Type,
                                     file: StaticString = #filePath, line: UInt = #line) throws -> [[Double]] {
    let t = FavorCallTensors<HalfTestTensor<H>, LinearTestTensor<Float>>(fc, x)
    let state = fc.hasState
    try FavorAttention.forward(
        query: t.q.view, key: t.k.view, value: t.v.view, projection: w, output: t.out.mutableView,
        initialState: state ? t.initialState : nil, finalState: state ? t.finalState : nil, options: fc.options)
    try FavorAttention.backward(
        query: t.q.view, key: t.k.view, value: t.v.view, projection: w, outputGradient: t.dout.view,
        queryGradient: t.dq.mutableView, keyGradient: t.dk.mutableView, valueGradient: t.dv.mutableView,
        initialState: state ? t.initialState : nil, finalStateGradient: state ? t.finalStateGradient : nil,
        initialStateGradient: state ? t.initialStateGradient : nil, options: fc.options)
    t.checkPadding(fc, file: file, line: line)
    let (out, dq, dk, dv, sN, zN, cN, ds0, dz0) = (t.out, t.dq, t.dk, t.dv, t.sN, t.zN, t.cN, t.ds0, t.dz0)
    return [out.values, dq.values, dk.values, dv.values, sN.values, zN.values, cN.values, ds0.values, dz0.values]
}
