import XCTest
import PerformerCore

/// The state-only backward (its own kernel path: one key pass, no state rebuilt) against the
/// route it replaced, the full non-causal backward with a query whose output gradient is zero
/// and the state gradient as dS_N (G = dS, g = dz for every key either way), and against
/// finite differences, on shapes that stress the chunking: one key, key counts around the
/// 32-row chunk, masked keys (lengths and starts), GQA, float64 and float32.
final class StateBackwardRouteTests: XCTestCase {
    private static let keyCounts = [1, 31, 33, 70]

    /// Key lengths and starts that mask keys at both ends (clamped to the key count).
    private static func mask(_ l: Int) -> (lengths: [Int], starts: [Int]) {
        ([l, max(1, l - 5)], [0, min(3, max(0, l - 6))])
    }

    // MARK: Linear

    private func linearRoute<T: AttentionScalar>(_ c: LinearCase, _ x: LinearInputs, as _: T.Type)
        throws -> (dedicated: [[Double]], full: [[Double]]) {
        let k = LinearTestTensor<T>(shape: c.kShape, strided: c.strided, values: x.k)
        let v = LinearTestTensor<T>(shape: c.vShape, values: x.v)
        let ds = LinearTestTensor<T>(shape: c.sShape, values: x.dsN), dz = LinearTestTensor<T>(shape: c.zShape, values: x.dzN)
        let dk = LinearTestTensor<T>(shape: c.kShape, strided: c.strided), dv = LinearTestTensor<T>(shape: c.vShape)
        let ds0 = LinearTestTensor<T>(shape: c.sShape), dz0 = LinearTestTensor<T>(shape: c.zShape)
        defer { withExtendedLifetime([k, v, ds, dz, dk, dv, ds0, dz0]) {} }
        try LinearAttention.stateBackward(
            key: k.view, value: v.view, finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
            keyGradient: dk.mutableView, valueGradient: dv.mutableView,
            initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView), options: c.options)
        XCTAssert(dk.paddingUntouched, "\(c)")
        let dedicated = [dk.values, dv.values, ds0.values, dz0.values]

        // The full backward: one query, zero output gradient.
        let q = LinearTestTensor<T>(shape: c.qShape, values: x.q)
        let dout = LinearTestTensor<T>(shape: c.oShape), dq = LinearTestTensor<T>(shape: c.qShape)
        let fk = LinearTestTensor<T>(shape: c.kShape), fv = LinearTestTensor<T>(shape: c.vShape)
        let fs0 = LinearTestTensor<T>(shape: c.sShape), fz0 = LinearTestTensor<T>(shape: c.zShape)
        defer { withExtendedLifetime([q, dout, dq, fk, fv, fs0, fz0]) {} }
        try LinearAttention.backward(
            query: q.view, key: k.view, value: v.view, outputGradient: dout.view, queryGradient: dq.mutableView,
            keyGradient: fk.mutableView, valueGradient: fv.mutableView,
            finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
            initialStateGradient: MutableLinearStateView(s: fs0.mutableView, z: fz0.mutableView), options: c.options)
        return (dedicated, [fk.values, fv.values, fs0.values, fz0.values])
    }

    /// Same bits as the full route (G + φ(q)ᵀ·0 is G), float64 and float32, every feature map.
    func testLinearMatchesFullBackwardRoute() throws {
        for l in Self.keyCounts {
            for map in LinearAttentionOptions.FeatureMap.allCases {
                let (lengths, starts) = Self.mask(l)
                let c = LinearCase(b: 2, h: 4, hk: 2, n: 1, l: l, d: 5, m: 3, featureMap: map,
                                   keyLengths: lengths, keyStarts: starts, strided: true)
                let x = LinearInputs(c, seed: UInt64(l))
                let double = try linearRoute(c, x, as: Double.self)
                XCTAssertEqual(double.dedicated, double.full, "float64 \(c)")
                let single = try linearRoute(c, x.rounded(to: Float.self), as: Float.self)
                XCTAssertEqual(single.dedicated, single.full, "float32 \(c)")
            }
        }
    }

    /// Central differences of L = Σ W_S∘S + Σ W_z∘z for the adversarial shapes (GQA, masks).
    func testLinearMatchesFiniteDifferences() throws {
        for l in [1, 33] {
            let (lengths, starts) = Self.mask(l)
            let c = LinearCase(b: 2, h: 2, hk: 1, n: 1, l: l, d: 3, m: 2, keyLengths: lengths, keyStarts: starts)
            let x = LinearInputs(c, seed: 5)
            let got = try linearRoute(c, x, as: Double.self).dedicated
            func loss(_ kk: [Double], _ vv: [Double]) throws -> Double {
                let k = LinearTestTensor<Double>(shape: c.kShape, values: kk), v = LinearTestTensor<Double>(shape: c.vShape, values: vv)
                let s = LinearTestTensor<Double>(shape: c.sShape), z = LinearTestTensor<Double>(shape: c.zShape)
                defer { withExtendedLifetime([k, v, s, z]) {} }
                try LinearAttention.state(key: k.view, value: v.view,
                                          finalState: MutableLinearStateView(s: s.mutableView, z: z.mutableView), options: c.options)
                return zip(s.values, x.dsN).reduce(0) { $0 + $1.0 * $1.1 } + zip(z.values, x.dzN).reduce(0) { $0 + $1.0 * $1.1 }
            }
            func numeric(_ values: [Double], _ at: (Int, Double) throws -> Double) rethrows -> [Double] {
                try (0..<values.count).map { i in (try at(i, 1e-6) - at(i, -1e-6)) / 2e-6 }
            }
            let nk = try numeric(x.k) { i, h in var p = x.k; p[i] += h; return try loss(p, x.v) }
            let nv = try numeric(x.v) { i, h in var p = x.v; p[i] += h; return try loss(x.k, p) }
            XCTAssertLessThan(linearRelativeError(got[0], nk), 1e-6, "dk L=\(l)")
            XCTAssertLessThan(linearRelativeError(got[1], nv), 1e-6, "dv L=\(l)")
        }
    }

    // MARK: FAVOR+

    private func favorRoute<T: AttentionScalar>(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, as _: T.Type)
        throws -> (dedicated: [[Double]], full: [[Double]]) {
        let k = LinearTestTensor<T>(shape: fc.kShape, strided: fc.strided, values: x.k)
        let v = LinearTestTensor<T>(shape: fc.vShape, values: x.v)
        let s0 = LinearTestTensor<T>(shape: fc.sShape, values: x.s0)
        let z0 = LinearTestTensor<T>(shape: fc.zShape, values: x.z0), c0 = LinearTestTensor<T>(shape: fc.zShape, values: x.c0)
        let ds = LinearTestTensor<T>(shape: fc.sShape, values: x.dsN), dz = LinearTestTensor<T>(shape: fc.zShape, values: x.dzN)
        let dk = LinearTestTensor<T>(shape: fc.kShape, strided: fc.strided), dv = LinearTestTensor<T>(shape: fc.vShape)
        let ds0 = LinearTestTensor<T>(shape: fc.sShape), dz0 = LinearTestTensor<T>(shape: fc.zShape)
        defer { withExtendedLifetime([k, v, s0, z0, c0, ds, dz, dk, dv, ds0, dz0]) {} }
        let initial = FavorStateView(s: s0.view, z: z0.view, c: c0.view)
        try FavorAttention.stateBackward(
            key: k.view, value: v.view, projection: w, finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
            keyGradient: dk.mutableView, valueGradient: dv.mutableView, initialState: initial,
            initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView), options: fc.options)
        XCTAssert(dk.paddingUntouched, "\(fc)")
        let dedicated = [dk.values, dv.values, ds0.values, dz0.values]

        // The full bidirectional backward with the initial state as its memory: one query, zero
        // output gradient (its gradient state adds nothing but may rescale: equal to rounding).
        let q = LinearTestTensor<T>(shape: fc.qShape, values: x.q)
        let dout = LinearTestTensor<T>(shape: fc.oShape), dq = LinearTestTensor<T>(shape: fc.qShape)
        let fk = LinearTestTensor<T>(shape: fc.kShape), fv = LinearTestTensor<T>(shape: fc.vShape)
        let fs0 = LinearTestTensor<T>(shape: fc.sShape), fz0 = LinearTestTensor<T>(shape: fc.zShape)
        defer { withExtendedLifetime([q, dout, dq, fk, fv, fs0, fz0]) {} }
        var options = fc.options
        options.causal = false
        try FavorAttention.backward(
            query: q.view, key: k.view, value: v.view, projection: w, outputGradient: dout.view,
            queryGradient: dq.mutableView, keyGradient: fk.mutableView, valueGradient: fv.mutableView,
            initialState: initial, finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
            initialStateGradient: MutableLinearStateView(s: fs0.mutableView, z: fz0.mutableView), options: options)
        return (dedicated, [fk.values, fv.values, fs0.values, fz0.values])
    }

    func testFavorMatchesFullBackwardRoute() throws {
        for l in Self.keyCounts {
            for kind in FavorFeatureKind.allCases {
                for norm in [nil, 12.0] where norm == nil || kind != .relu {
                    let (lengths, starts) = Self.mask(l)
                    let fc = FavorCase(b: 2, h: 4, hk: 2, n: 1, l: l, d: 6, m: 10, mv: 3, kind: kind,
                                       keyLengths: lengths, keyStarts: starts, withState: true, strided: true, seed: UInt64(l))
                    let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 4)
                    var x = FavorInputs(fc, projection: w)
                    if let norm { x.k = normalizedRows(x.k, width: fc.d, norm: norm) }
                    let what = "\(fc) norm \(norm ?? 0)"
                    let double = try favorRoute(fc, x, w, as: Double.self)
                    let single = try favorRoute(fc, x.rounded(to: Float.self), w, as: Float.self)
                    for (name, i) in [("dk", 0), ("dv", 1), ("dS0", 2), ("dz0", 3)] {
                        XCTAssertLessThan(linearRelativeError(double.dedicated[i], double.full[i]), 1e-12, "\(name) float64 \(what)")
                        XCTAssertLessThan(linearRelativeError(single.dedicated[i], single.full[i]), 1e-5, "\(name) float32 \(what)")
                        XCTAssert(double.dedicated[i].allSatisfy(\.isFinite), "\(name) \(what)")
                    }
                }
            }
        }
    }

    /// Central differences (c held at the library's) for one key and a masked ragged chunk.
    func testFavorMatchesFiniteDifferences() throws {
        for l in [1, 33] {
            for kind in [FavorFeatureKind.positive, .hyperbolic, .trigonometric] {
                let (lengths, starts) = Self.mask(l)
                let fc = FavorCase(b: 2, h: 2, hk: 1, n: l, l: l, d: 3, m: 4, mv: 2, causal: true, kind: kind,
                                   keyLengths: lengths, keyStarts: starts, withState: true, seed: 23)
                let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 6)
                var x = FavorInputs(fc, projection: w)
                x.dout = [Double](repeating: 0, count: x.dout.count)
                let got = try favorRoute(fc, x, w, as: Double.self).dedicated
                let shifts = try runFavor(fc, x, w, as: Double.self, backward: false).cN
                let expected = favorFiniteDifferences(fc, x, w, shiftReference: shifts)
                XCTAssertLessThan(linearRelativeError(got[0], expected[1]), 1e-6, "dk \(kind) L=\(l)")
                XCTAssertLessThan(linearRelativeError(got[1], expected[2]), 1e-6, "dv \(kind) L=\(l)")
                XCTAssertLessThan(linearRelativeError(got[2], expected[3]), 1e-6, "dS0 \(kind) L=\(l)")
                XCTAssertLessThan(linearRelativeError(got[3], expected[4]), 1e-6, "dz0 \(kind) L=\(l)")
            }
        }
    }

    // MARK: Threads

    /// The same bits for 1, 2 and 3 library threads (GQA: a key head's state heads add into
    /// its dk, dv in order on one thread).
    func testBitIdenticalAcrossThreadCounts() throws {
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        let c = LinearCase(b: 2, h: 4, hk: 2, n: 1, l: 150, d: 16, m: 8, keyLengths: [150, 97], keyStarts: [0, 5])
        let x = LinearInputs(c, seed: 3).rounded(to: Float.self)
        let fc = FavorCase(b: 2, h: 4, hk: 2, n: 1, l: 150, d: 8, m: 32, mv: 8, keyLengths: [150, 97],
                           keyStarts: [0, 5], withState: true, seed: 3)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 1)
        let fx = FavorInputs(fc, projection: w).rounded(to: Float.self)
        var runs: [[[Double]]] = []
        for threads in [1, 2, 3] {
            try Runtime.setNumThreads(threads)
            runs.append(try linearRoute(c, x, as: Float.self).dedicated + favorRoute(fc, fx, w, as: Float.self).dedicated)
        }
        for run in runs.dropFirst() { XCTAssertEqual(run, runs[0]) }
    }
}
