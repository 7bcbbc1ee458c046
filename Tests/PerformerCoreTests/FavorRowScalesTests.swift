#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// `FavorAttention.forward(rowScales:)`: per query row the unit U_i and scaled denominator
/// den_i. The output is unchanged bit for bit; and the initial triple's gradient formed from
/// the queries with them, dS̃0_f = Σ_i ν·e^{a_f(q_i)+c0_f−U_i}·g_i, dz̃0_f = −Σ_i ν·e^{…}·(g_i·o_i)
/// with g_i = dout_i/den_i (docs/DISTRIBUTED.md), equals the backward's dS̃0, dz̃0, at
/// moderate norms and at norm 30 (where φ underflows), causal (two chunks) and not.
final class FavorRowScalesTests: XCTestCase {
    /// (dS̃0, dz̃0) from the queries, U, den, out, dout in float64 (exponential kinds).
    static func querySideGradient(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, units: [Double],
                                  dens: [Double], out: [Double]) -> (ds: [Double], dz: [Double]) {
        let (n, d, c, mv) = (fc.n, fc.d, fc.c, fc.mv)
        let nu = 1 / Double(fc.kind == .hyperbolic ? 2 * fc.m : fc.m).squareRoot()
        let s = (1 / Double(d).squareRoot()).squareRoot()
        var ds = [Double](repeating: 0, count: fc.b * fc.h * c * mv), dz = [Double](repeating: 0, count: fc.b * fc.h * c)
        for head in 0..<(fc.b * fc.h) {
            for i in 0..<n {
                let row = head * n + i
                guard dens[row] != 0 else { continue }
                let xHat = (0..<d).map { x.q[row * d + $0] * s }
                let half = xHat.reduce(0) { $0 + $1 * $1 } / 2
                let u = (0..<fc.m).map { f in (0..<d).reduce(0.0) { $0 + w[f, $1] * xHat[$1] } }
                let a = fc.kind == .hyperbolic ? u.map { $0 - half } + u.map { -$0 - half } : u.map { $0 - half }
                let g = (0..<mv).map { x.dout[row * mv + $0] / dens[row] }
                let go = (0..<mv).reduce(0.0) { $0 + g[$1] * out[row * mv + $1] }
                for f in 0..<c {
                    let weight = nu * exp(a[f] + x.c0[head * c + f] - units[row])
                    for j in 0..<mv { ds[(head * c + f) * mv + j] += weight * g[j] }
                    dz[head * c + f] -= weight * go
                }
            }
        }
        return (ds, dz)
    }

    func check<T: AttentionScalar>(_ fc: FavorCase, norm: Double?, as _: T.Type, tolerance: Double) throws {
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 41)
        var x = FavorInputs(fc, projection: w)
        if let norm {
            x.q = normalizedRows(x.q, width: fc.d, norm: norm)
            x.k = normalizedRows(x.k, width: fc.d, norm: norm)
        }
        x = x.rounded(to: T.self)
        let plain = FavorCallTensors<LinearTestTensor<T>, LinearTestTensor<T>>(fc, x)
        let t = FavorCallTensors<LinearTestTensor<T>, LinearTestTensor<T>>(fc, x)
        let rows = SIMD4(fc.b, fc.h, fc.n, 1)
        let units = LinearTestTensor<T>(shape: rows, strided: true), dens = LinearTestTensor<T>(shape: rows)
        try FavorAttention.forward(query: plain.q.view, key: plain.k.view, value: plain.v.view, projection: w,
                                   output: plain.out.mutableView, initialState: plain.initialState, options: fc.options)
        try FavorAttention.forward(query: t.q.view, key: t.k.view, value: t.v.view, projection: w,
                                   output: t.out.mutableView, initialState: t.initialState,
                                   rowScales: FavorRowScalesView(units: units.mutableView, denominators: dens.mutableView),
                                   options: fc.options)
        XCTAssertEqual(t.out.rawValues, plain.out.rawValues, "out changed with row scales: \(fc)")
        XCTAssert(units.paddingUntouched && dens.paddingUntouched, "row scales written outside their views: \(fc)")
        XCTAssert(units.values.allSatisfy(\.isFinite) && dens.values.allSatisfy { $0.isFinite && $0 > 0 },
                  "\(T.self) norm \(norm ?? 0): U \(units.values.min()!) … \(units.values.max()!), den \(dens.values.min()!) … \(dens.values.max()!) \(fc)")
        try FavorAttention.backward(
            query: t.q.view, key: t.k.view, value: t.v.view, projection: w, outputGradient: t.dout.view,
            queryGradient: t.dq.mutableView, keyGradient: t.dk.mutableView, valueGradient: t.dv.mutableView,
            initialState: t.initialState, initialStateGradient: t.initialStateGradient, options: fc.options)
        let (ds, dz) = Self.querySideGradient(fc, x, w, units: units.values, dens: dens.values, out: t.out.values)
        XCTAssertLessThanOrEqual(relativeError(ds, t.ds0.values), tolerance, "dS0 \(fc) norm \(norm ?? 0)")
        XCTAssertLessThanOrEqual(relativeError(dz, t.dz0.values), tolerance, "dz0 \(fc) norm \(norm ?? 0)")
    }

    func testQuerySideGradientEqualsBackward() throws {
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            for causal in [false, true] {
                for norm in [nil, 30.0] {
                    // ε = 0 at norm 30: there every φ(q)·φ(k) is ~e^{−100}, so ε would make every row ~0.
                    let fc = FavorCase(b: 2, h: 2, hk: 1, n: 70, l: 70, d: 8, m: 6, mv: 3, causal: causal, kind: kind,
                                       epsilon: norm == nil ? 1e-3 : 0, withState: true)
                    try check(fc, norm: norm, as: Double.self, tolerance: 1e-10)
                    try check(fc, norm: norm, as: Float.self, tolerance: 2e-4)
                }
            }
        }
    }

    func testBadRowScalesAreNamedAndNothingIsWritten() throws {
        let fc = FavorCase(n: 5, l: 5, causal: true)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 3)
        let t = FavorCallTensors<LinearTestTensor<Double>, LinearTestTensor<Double>>(fc, FavorInputs(fc, projection: w))
        let good = LinearTestTensor<Double>(shape: SIMD4(1, 1, 5, 1)), bad = LinearTestTensor<Double>(shape: SIMD4(1, 1, 4, 1))
        good.set([Double](repeating: -7, count: 5))
        t.out.set([Double](repeating: -7, count: t.out.count))
        for (units, dens, name) in [(bad, good, "row_units"), (good, bad, "row_denominators")] {
            XCTAssertThrowsError(try FavorAttention.forward(
                query: t.q.view, key: t.k.view, value: t.v.view, projection: w, output: t.out.mutableView,
                rowScales: FavorRowScalesView(units: units.mutableView, denominators: dens.mutableView),
                options: fc.options)) { error in
                XCTAssert("\(error)".contains(name), "\(error)")
            }
        }
        XCTAssert(good.values.allSatisfy { $0 == -7 }, "row scales written on error")
        XCTAssert(t.out.values.allSatisfy { $0 == -7 }, "out written on error")
    }
}
