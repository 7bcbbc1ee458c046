#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// FavorAttention.state / stateBackward: the scaled state of keys without queries equals a causal
/// forward's final state over the same keys (every feature kind, initial state, GQA with Hs = H
/// and Hs = Hk, key lengths and starts, norms of 30); gradients by finite differences; bad input.
final class FavorStateOnlyTests: XCTestCase {
    struct StateResult { var s: [Double], z: [Double], c: [Double] }

    /// The state of `heads` state heads over fc's keys, from fc's initial state when `initial`.
    private func state<T: AttentionScalar>(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection, heads: Int,
                                           initial: Bool, as _: T.Type) throws -> StateResult {
        let k = LinearTestTensor<T>(shape: fc.kShape, strided: fc.strided, values: x.k)
        let v = LinearTestTensor<T>(shape: fc.vShape, strided: fc.strided, values: x.v)
        let shape = SIMD4(fc.b, heads, fc.c, fc.mv), vector = SIMD4(fc.b, heads, fc.c, 1)
        let s0 = LinearTestTensor<T>(shape: fc.sShape, strided: fc.strided, values: x.s0)
        let z0 = LinearTestTensor<T>(shape: fc.zShape, values: x.z0), c0 = LinearTestTensor<T>(shape: fc.zShape, values: x.c0)
        let s = LinearTestTensor<T>(shape: shape, strided: fc.strided)
        let z = LinearTestTensor<T>(shape: vector), c = LinearTestTensor<T>(shape: vector, strided: fc.strided)
        defer { withExtendedLifetime([k, v, s0, z0, c0, s, z, c]) {} }
        try FavorAttention.state(
            key: k.view, value: v.view, projection: w,
            initialState: initial ? FavorStateView(s: s0.view, z: z0.view, c: c0.view) : nil,
            finalState: MutableFavorStateView(s: s.mutableView, z: z.mutableView, c: c.mutableView), options: fc.options)
        XCTAssert(s.paddingUntouched && c.paddingUntouched)
        return StateResult(s: s.values, z: z.values, c: c.values)
    }

    /// Equal (in the scaled form: S̃, z̃ to rounding, c exactly) to the final state of a causal
    /// forward, for every kind, with an initial state, GQA (Hs = H), key lengths and starts.
    func check<T: AttentionScalar>(_ kind: FavorFeatureKind, norm: Double?, as _: T.Type, tolerance: Double) throws {
        let fc = FavorCase(b: 2, h: 4, hk: 2, n: 150, l: 150, d: 8, m: 12, mv: 5, causal: true, kind: kind,
                           keyLengths: [150, 97], keyStarts: [0, 20], withState: true, strided: true, seed: 41)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 9)
        var x = FavorInputs(fc, projection: w)
        if let norm {
            x.k = normalizedRows(x.k, width: fc.d, norm: norm)
            x.q = normalizedRows(x.q, width: fc.d, norm: norm)
        }
        x = x.rounded(to: T.self)
        let withInitial = try runFavor(fc, x, w, as: T.self, backward: false)
        let fromInitial = try state(fc, x, w, heads: fc.h, initial: true, as: T.self)
        XCTAssertEqual(fromInitial.c, withInitial.cN, "c \(kind) \(T.self) norm \(norm ?? 0)")
        XCTAssertLessThan(linearRelativeError(fromInitial.s, withInitial.sTilde), tolerance, "S~ \(kind) \(T.self) norm \(norm ?? 0)")
        XCTAssertLessThan(linearRelativeError(fromInitial.z, withInitial.zTilde), tolerance, "z~ \(kind) \(T.self) norm \(norm ?? 0)")
        XCTAssert(fromInitial.s.allSatisfy(\.isFinite) && fromInitial.z.allSatisfy(\.isFinite))
        // Without an initial state: the causal forward from the empty state (c = −inf, 0 relu).
        var empty = x
        let c = fc.c
        for i in 0..<empty.s0.count { empty.s0[i] = 0 }
        for i in 0..<empty.z0.count { empty.z0[i] = 0; empty.c0[i] = kind == .relu ? 0 : -.infinity }
        let whole = try runFavor(fc, empty, w, as: T.self, backward: false)
        let got = try state(fc, empty, w, heads: fc.h, initial: false, as: T.self)
        XCTAssertEqual(got.c, whole.cN, "c (no initial) \(kind) \(T.self)")
        XCTAssertLessThan(linearRelativeError(got.s, whole.sTilde), tolerance, "S~ (no initial) \(kind) \(T.self)")
        XCTAssertLessThan(linearRelativeError(got.z, whole.zTilde), tolerance, "z~ (no initial) \(kind) \(T.self)")
        // Hs = Hk: one state per key head, the state of any query head of its group.
        let perKeyHead = try state(fc, empty, w, heads: fc.hk, initial: false, as: T.self)
        let (cm, group) = (c * fc.mv, fc.h / fc.hk)
        for b in 0..<fc.b {
            for h in 0..<fc.h {
                let hk = h / group, kh = b * fc.hk + hk, qh = b * fc.h + h
                XCTAssertEqual(Array(perKeyHead.s[(kh * cm)..<((kh + 1) * cm)]), Array(got.s[(qh * cm)..<((qh + 1) * cm)]))
                XCTAssertEqual(Array(perKeyHead.c[(kh * c)..<((kh + 1) * c)]), Array(got.c[(qh * c)..<((qh + 1) * c)]))
            }
        }
    }

    func testStateEqualsFinalStateOfCausalForward() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for kind in FavorFeatureKind.allCases {
            try check(kind, norm: nil, as: Double.self, tolerance: 1e-12)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                try check(kind, norm: nil, as: Float.self, tolerance: 1e-5)
            }
        }
    }

    /// ‖k‖ = 30: the unstabilized features over- or underflow (e^{±100} and beyond), the scaled
    /// state stays finite and equal to the causal forward's.
    func testLargeNormsAreStable() throws {
        for kind in FavorFeatureKind.allCases where kind != .relu {
            try check(kind, norm: 30, as: Double.self, tolerance: 1e-10)
            try check(kind, norm: 30, as: Float.self, tolerance: 1e-4)
        }
    }

    /// In place (the output is the initial state's memory, same layout) gives the same state.
    func testInPlaceUpdate() throws {
        let fc = FavorCase(b: 1, h: 2, hk: 1, n: 40, l: 40, d: 4, m: 6, mv: 3, causal: true, withState: true, seed: 3)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 2)
        let x = FavorInputs(fc, projection: w)
        let expected = try state(fc, x, w, heads: fc.h, initial: true, as: Double.self)
        let k = LinearTestTensor<Double>(shape: fc.kShape, values: x.k), v = LinearTestTensor<Double>(shape: fc.vShape, values: x.v)
        let s = LinearTestTensor<Double>(shape: fc.sShape, values: x.s0)
        let z = LinearTestTensor<Double>(shape: fc.zShape, values: x.z0), c = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0)
        defer { withExtendedLifetime([k, v, s, z, c]) {} }
        let view = MutableFavorStateView(s: s.mutableView, z: z.mutableView, c: c.mutableView)
        try FavorAttention.state(key: k.view, value: v.view, projection: w, initialState: view.readOnly, finalState: view,
                                 options: fc.options)
        XCTAssertEqual(s.values, expected.s)
        XCTAssertEqual(z.values, expected.z)
        XCTAssertEqual(c.values, expected.c)
    }

    /// stateBackward against central differences of L = Σ W_S∘(e^{−c}S) + Σ W_z∘(e^{−c}z) (c held
    /// at the library's), every kind, GQA with Hs = H (h = 2, hk = 1) and Hs = Hk, key lengths
    /// and starts, with and without the initial state's gradient.
    func testStateBackwardMatchesFiniteDifferences() throws {
        for kind in FavorFeatureKind.allCases {
            for heads in [1, 2] {
                var fc = FavorCase(b: 2, h: heads, hk: 1, n: 6, l: 6, d: 3, m: 4, mv: 2, causal: true, kind: kind,
                                   keyLengths: [6, 4], keyStarts: [1, 0], withState: true, strided: heads == 2, seed: 17)
                let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 8)
                var x = FavorInputs(fc, projection: w)
                x.dout = [Double](repeating: 0, count: x.dout.count)
                let base = try state(fc, x, w, heads: fc.h, initial: true, as: Double.self)
                let expected = favorFiniteDifferences(fc, x, w, shiftReference: base.c)

                let k = LinearTestTensor<Double>(shape: fc.kShape, strided: fc.strided, values: x.k)
                let v = LinearTestTensor<Double>(shape: fc.vShape, values: x.v)
                let s0 = LinearTestTensor<Double>(shape: fc.sShape, values: x.s0)
                let z0 = LinearTestTensor<Double>(shape: fc.zShape, values: x.z0), c0 = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0)
                let ws = LinearTestTensor<Double>(shape: fc.sShape, values: x.dsN), wz = LinearTestTensor<Double>(shape: fc.zShape, values: x.dzN)
                let dk = LinearTestTensor<Double>(shape: fc.kShape, strided: fc.strided), dv = LinearTestTensor<Double>(shape: fc.vShape)
                let ds0 = LinearTestTensor<Double>(shape: fc.sShape, strided: true), dz0 = LinearTestTensor<Double>(shape: fc.zShape)
                defer { withExtendedLifetime([k, v, s0, z0, c0, ws, wz, dk, dv, ds0, dz0]) {} }
                try FavorAttention.stateBackward(
                    key: k.view, value: v.view, projection: w, finalStateGradient: LinearStateView(s: ws.view, z: wz.view),
                    keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                    initialState: FavorStateView(s: s0.view, z: z0.view, c: c0.view),
                    initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView), options: fc.options)
                let what = "\(kind) heads \(heads)"
                XCTAssertLessThan(linearRelativeError(dk.values, expected[1]), 1e-6, "dk \(what)")
                XCTAssertLessThan(linearRelativeError(dv.values, expected[2]), 1e-6, "dv \(what)")
                XCTAssertLessThan(linearRelativeError(ds0.values, expected[3]), 1e-6, "dS0 \(what)")
                XCTAssertLessThan(linearRelativeError(dz0.values, expected[4]), 1e-6, "dz0 \(what)")
                XCTAssert(dk.paddingUntouched && ds0.paddingUntouched)

                // Without an initial state: the gradients of the state from the empty one.
                fc.withState = true
                var empty = x
                for i in 0..<empty.s0.count { empty.s0[i] = 0 }
                for i in 0..<empty.z0.count { empty.z0[i] = 0; empty.c0[i] = kind == .relu ? 0 : -.infinity }
                let emptyBase = try state(fc, empty, w, heads: fc.h, initial: false, as: Double.self)
                let emptyExpected = favorFiniteDifferences(fc, empty, w, shiftReference: emptyBase.c)
                try FavorAttention.stateBackward(
                    key: k.view, value: v.view, projection: w, finalStateGradient: LinearStateView(s: ws.view, z: wz.view),
                    keyGradient: dk.mutableView, valueGradient: dv.mutableView, options: fc.options)
                XCTAssertLessThan(linearRelativeError(dk.values, emptyExpected[1]), 1e-6, "dk (no initial) \(what)")
                XCTAssertLessThan(linearRelativeError(dv.values, emptyExpected[2]), 1e-6, "dv (no initial) \(what)")
            }
        }
    }

    /// Bad arguments throw a message naming the argument and write nothing.
    func testBadArgumentsWriteNothing() throws {
        let fc = FavorCase(b: 1, h: 2, hk: 2, n: 5, l: 5, d: 4, m: 3, mv: 2, causal: true, withState: true, seed: 4)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 1)
        let x = FavorInputs(fc, projection: w)
        let k = LinearTestTensor<Double>(shape: fc.kShape, values: x.k), v = LinearTestTensor<Double>(shape: fc.vShape, values: x.v)
        let s0 = LinearTestTensor<Double>(shape: fc.sShape, values: x.s0)
        let z0 = LinearTestTensor<Double>(shape: fc.zShape, values: x.z0), c0 = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0)
        let s = LinearTestTensor<Double>(shape: fc.sShape), z = LinearTestTensor<Double>(shape: fc.zShape)
        let c = LinearTestTensor<Double>(shape: fc.zShape)
        let s3 = LinearTestTensor<Double>(shape: SIMD4(1, 3, fc.c, fc.mv))
        let z3 = LinearTestTensor<Double>(shape: SIMD4(1, 3, fc.c, 1)), c3 = LinearTestTensor<Double>(shape: SIMD4(1, 3, fc.c, 1))
        let k5 = LinearTestTensor<Double>(shape: SIMD4(1, 2, 5, 5))
        let badC = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0.map { _ in .nan })
        defer { withExtendedLifetime([k, v, s0, z0, c0, s, z, c, s3, z3, c3, k5, badC]) {} }
        let final = MutableFavorStateView(s: s.mutableView, z: z.mutableView, c: c.mutableView)
        func expectError(_ fragment: String, _ body: () throws -> Void) {
            do {
                try body()
                XCTFail("no error, expected \(fragment)")
            } catch let error as PerformerError {
                XCTAssert(error.message.contains(fragment), "\(error.message) does not name \(fragment)")
            } catch { XCTFail("\(error)") }
            XCTAssert(s.values.allSatisfy { $0 == 0 } && z.values.allSatisfy { $0 == 0 } && c.values.allSatisfy { $0 == 0 })
        }
        expectError("S_out.shape[1] = 3") {
            try FavorAttention.state(key: k.view, value: v.view, projection: w,
                                     finalState: MutableFavorStateView(s: s3.mutableView, z: z3.mutableView, c: c3.mutableView))
        }
        expectError("k.shape[3] = 5") {
            try FavorAttention.state(key: k5.view, value: v.view, projection: w, finalState: final)
        }
        expectError("c0[0, 0, 0]") {
            try FavorAttention.state(key: k.view, value: v.view, projection: w,
                                     initialState: FavorStateView(s: s0.view, z: z0.view, c: badC.view), finalState: final)
        }
        // z_out one element after z0 in the same buffer: overlapping, not the same layout.
        let zBig = LinearTestTensor<Double>(shape: SIMD4(1, 1, 2 * fc.c + 1, 1), values: x.z0 + [0])
        defer { withExtendedLifetime(zBig) {} }
        let zStrides = SIMD4(2 * fc.c, fc.c, 1, 1)
        expectError("z_out") {
            try FavorAttention.state(
                key: k.view, value: v.view, projection: w,
                initialState: FavorStateView(s: s0.view, z: TensorView(base: zBig.storage, shape: fc.zShape, strides: zStrides),
                                             c: c0.view),
                finalState: MutableFavorStateView(
                    s: s.mutableView, z: MutableTensorView(base: zBig.storage + 1, shape: fc.zShape, strides: zStrides),
                    c: c.mutableView))
        }
        XCTAssertEqual(zBig.values, x.z0 + [0])
        let dk = LinearTestTensor<Double>(shape: fc.kShape), dv = LinearTestTensor<Double>(shape: fc.vShape)
        let ds0 = LinearTestTensor<Double>(shape: fc.sShape), dz0 = LinearTestTensor<Double>(shape: fc.zShape)
        defer { withExtendedLifetime([dk, dv, ds0, dz0]) {} }
        expectError("no initial state") {
            try FavorAttention.stateBackward(
                key: k.view, value: v.view, projection: w, finalStateGradient: LinearStateView(s: s0.view, z: z0.view),
                keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView))
        }
        XCTAssert(dk.values.allSatisfy { $0 == 0 } && ds0.values.allSatisfy { $0 == 0 })
    }
}
