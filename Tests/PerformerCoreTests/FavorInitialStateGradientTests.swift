#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// `FavorAttention.initialStateGradient`: the initial triple's gradient from the queries, the
/// forward's row scales, out and dout. Equals a float64 reference (Q_if = φ_f(q_i)·e^{c0_f − U_i},
/// g_i = dout_i/den_i) and the backward's dS̃0, dz̃0, for every feature kind, causal or not,
/// GQA, strided views, at norm 30 for the exponential kinds (φ underflows there, U_i matters).
final class FavorInitialStateGradientTests: XCTestCase {
    /// The float64 reference from the forward's U, den and out.
    static func reference(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, units: [Double], dens: [Double],
                          out: [Double]) -> (ds: [Double], dz: [Double]) {
        if fc.kind == .positive || fc.kind == .hyperbolic {
            // A row with U = −inf adds nothing, as one with den = 0.
            let usable = dens.indices.map { units[$0] == -.infinity ? 0 : dens[$0] }
            return FavorRowScalesTests.querySideGradient(fc, x, w, units: units, dens: usable, out: out)
        }
        let (n, d, c, mv) = (fc.n, fc.d, fc.c, fc.mv)
        var ds = [Double](repeating: 0, count: fc.b * fc.h * c * mv), dz = [Double](repeating: 0, count: fc.b * fc.h * c)
        for head in 0..<(fc.b * fc.h) {
            for i in 0..<n {
                let row = head * n + i
                guard dens[row] != 0, units[row] != -.infinity else { continue }
                let phi = referenceFeatures(Array(x.q[(row * d)..<((row + 1) * d)]), w, kind: fc.kind)
                let g = (0..<mv).map { x.dout[row * mv + $0] / dens[row] }
                let go = (0..<mv).reduce(0.0) { $0 + g[$1] * out[row * mv + $1] }
                for f in 0..<c {
                    let q = phi[f] * exp(x.c0[head * c + f] - units[row])
                    for j in 0..<mv { ds[(head * c + f) * mv + j] += q * g[j] }
                    dz[head * c + f] -= q * go
                }
            }
        }
        return (ds, dz)
    }

    /// Forward with row scales (dens optionally zeroed at `zeroRows`), then the query-side call,
    /// against the reference and (no zeroed rows) the backward.
    func check<T: AttentionScalar>(_ fc: FavorCase, norm: Double?, as _: T.Type, tolerance: Double,
                                   zeroRows: [Int] = []) throws {
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 17)
        var x = FavorInputs(fc, projection: w)
        if let norm {
            x.q = normalizedRows(x.q, width: fc.d, norm: norm)
            x.k = normalizedRows(x.k, width: fc.d, norm: norm)
        }
        x = x.rounded(to: T.self)
        let t = FavorCallTensors<LinearTestTensor<T>, LinearTestTensor<T>>(fc, x)
        let rows = SIMD4(fc.b, fc.h, fc.n, 1)
        let units = LinearTestTensor<T>(shape: rows, strided: fc.strided)
        let dens = LinearTestTensor<T>(shape: rows, strided: fc.strided)
        try FavorAttention.forward(query: t.q.view, key: t.k.view, value: t.v.view, projection: w,
                                   output: t.out.mutableView, initialState: t.initialState,
                                   rowScales: FavorRowScalesView(units: units.mutableView, denominators: dens.mutableView),
                                   options: fc.options)
        if !zeroRows.isEmpty {
            var u = units.values, dv = dens.values
            for (k, r) in zeroRows.enumerated() {
                if k % 2 == 0 { dv[r] = 0 } else { u[r] = -.infinity }
            }
            units.set(u)
            dens.set(dv)
        }
        let ds = LinearTestTensor<T>(shape: fc.sShape, strided: fc.strided)
        let dz = LinearTestTensor<T>(shape: fc.zShape, strided: fc.strided)
        try FavorAttention.initialStateGradient(
            query: t.q.view, projection: w, initialShift: t.c0.view, rowUnits: units.view, rowDenominators: dens.view,
            output: t.out.view, outputGradient: t.dout.view,
            initialStateGradient: MutableLinearStateView(s: ds.mutableView, z: dz.mutableView), options: fc.options)
        XCTAssert(ds.paddingUntouched && dz.paddingUntouched, "dS0/dz0 written outside their views: \(fc)")
        let label = "\(T.self) \(fc) norm \(norm ?? 0) zero rows \(zeroRows)"
        let reference = Self.reference(fc, x, w, units: units.values, dens: dens.values, out: t.out.values)
        XCTAssert(reference.ds.contains { $0 != 0 } && reference.dz.contains { $0 != 0 }, "a zero reference: \(label)")
        XCTAssertLessThanOrEqual(relativeError(ds.values, reference.ds), tolerance, "dS0 vs reference: \(label)")
        XCTAssertLessThanOrEqual(relativeError(dz.values, reference.dz), tolerance, "dz0 vs reference: \(label)")
        guard zeroRows.isEmpty else { return }
        try FavorAttention.backward(
            query: t.q.view, key: t.k.view, value: t.v.view, projection: w, outputGradient: t.dout.view,
            queryGradient: t.dq.mutableView, keyGradient: t.dk.mutableView, valueGradient: t.dv.mutableView,
            initialState: t.initialState, initialStateGradient: t.initialStateGradient, options: fc.options)
        XCTAssertLessThanOrEqual(relativeError(ds.values, t.ds0.values), tolerance, "dS0 vs backward: \(label)")
        XCTAssertLessThanOrEqual(relativeError(dz.values, t.dz0.values), tolerance, "dz0 vs backward: \(label)")
    }

    func testEveryKindEqualsReferenceAndBackward() throws {
        for kind in [FavorFeatureKind.positive, .hyperbolic, .trigonometric, .relu] {
            for causal in [false, true] {
                for strided in [false, true] {
                    // 70 rows: two whole chunks and a partial one; two query heads per key head.
                    let fc = FavorCase(b: 2, h: 2, hk: 1, n: 70, l: 70, d: 8, m: 6, mv: 3, causal: causal, kind: kind,
                                       epsilon: 1e-3, withState: true, strided: strided)
                    try check(fc, norm: nil, as: Double.self, tolerance: 1e-10)
                    try check(fc, norm: nil, as: Float.self, tolerance: 3e-4)
                }
            }
        }
    }

    func testLargeNormsWhereTheUnitsMatter() throws {
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            for causal in [false, true] {
                let fc = FavorCase(b: 1, h: 2, hk: 2, n: 40, l: 40, d: 8, m: 6, mv: 3, causal: causal, kind: kind,
                                   epsilon: 0, withState: true)
                try check(fc, norm: 30, as: Double.self, tolerance: 1e-10)
                try check(fc, norm: 30, as: Float.self, tolerance: 3e-4)
            }
        }
    }

    func testOneRowAndRowsWithoutOutput() throws {
        for kind in [FavorFeatureKind.positive, .trigonometric, .relu] {
            let one = FavorCase(b: 1, h: 1, n: 1, l: 1, d: 5, m: 4, mv: 2, causal: true, kind: kind, withState: true)
            try check(one, norm: nil, as: Double.self, tolerance: 1e-12)
            let fc = FavorCase(b: 1, h: 2, n: 35, l: 35, d: 5, m: 4, mv: 2, causal: false, kind: kind, withState: true)
            try check(fc, norm: nil, as: Double.self, tolerance: 1e-10, zeroRows: [0, 3, 33, 34, 40, 69])
            try check(fc, norm: nil, as: Float.self, tolerance: 3e-4, zeroRows: [1, 2, 36])
        }
    }

    func testBadArgumentsAreNamedAndNothingIsWritten() throws {
        let fc = FavorCase(b: 1, h: 2, n: 5, l: 5, d: 4, m: 3, mv: 2, kind: .trigonometric, withState: true)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 5)
        let t = FavorCallTensors<LinearTestTensor<Double>, LinearTestTensor<Double>>(fc, FavorInputs(fc, projection: w))
        let rows = SIMD4(fc.b, fc.h, fc.n, 1)
        let units = LinearTestTensor<Double>(shape: rows, values: [Double](repeating: 1, count: 10))
        let dens = LinearTestTensor<Double>(shape: rows, values: [Double](repeating: 1, count: 10))
        let ds = LinearTestTensor<Double>(shape: fc.sShape, values: [Double](repeating: -7, count: fc.b * fc.h * fc.c * fc.mv))
        let dz = LinearTestTensor<Double>(shape: fc.zShape, values: [Double](repeating: -7, count: fc.b * fc.h * fc.c))
        func call(q: TensorView<Double>? = nil, c0: TensorView<Double>? = nil, units u: TensorView<Double>? = nil,
                  dens d: TensorView<Double>? = nil, ds s: MutableTensorView<Double>? = nil) throws {
            try FavorAttention.initialStateGradient(
                query: q ?? t.q.view, projection: w, initialShift: c0 ?? t.c0.view, rowUnits: u ?? units.view,
                rowDenominators: d ?? dens.view, output: t.out.view, outputGradient: t.dout.view,
                initialStateGradient: MutableLinearStateView(s: s ?? ds.mutableView, z: dz.mutableView), options: fc.options)
        }
        let short = LinearTestTensor<Double>(shape: SIMD4(1, 2, 4, 1))
        var c0 = t.c0.values
        c0[1] += 1  // trigonometric: not one c per head
        let uneven = LinearTestTensor<Double>(shape: fc.zShape, values: c0)
        let nan = LinearTestTensor<Double>(shape: rows, values: [1, 1, .nan, 1, 1, 1, 1, 1, 1, 1])
        let plusInf = LinearTestTensor<Double>(shape: rows, values: [1, 1, 1, 1, 1, 1, .infinity, 1, 1, 1])
        let wide = LinearTestTensor<Double>(shape: SIMD4(1, 2, 5, 5))
        let cases: [(String, () throws -> Void)] = [
            ("row_units", { try call(units: short.view) }),
            ("row_denominators", { try call(dens: short.view) }),
            ("c0[0, 0, 1]", { try call(c0: uneven.view) }),
            ("row_denominators[0, 0, 2, 0]", { try call(dens: nan.view) }),
            ("row_units[0, 1, 1]", { try call(units: plusInf.view) }),
            ("q.shape[3]", { try call(q: wide.view) }),
            ("dS0", { try call(ds: MutableTensorView(base: UnsafeMutablePointer(mutating: t.dout.view.base), shape: fc.sShape,
                                                   strides: SIMD4(0, 0, 0, 0))) }),
        ]
        for (name, body) in cases {
            XCTAssertThrowsError(try body(), name) { error in XCTAssert("\(error)".contains(name), "\(name): \(error)") }
        }
        XCTAssert(ds.values.allSatisfy { $0 == -7 } && dz.values.allSatisfy { $0 == -7 }, "written on error")
    }
}
