#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// The causal state contract (one call = pieces with a carried state = FavorDecoder steps),
/// causality bit for bit, stability at ‖q‖ = ‖k‖ = 30, and bad input.
final class FavorAttentionStateTests: XCTestCase {
    /// One causal forward over N tokens from (S̃0, z̃0, c0), run as pieces [0, a), [a, b), [b, N)
    /// whose final state seeds the next, and as FavorDecoder steps: the same outputs and the same
    /// mathematical final state, to rounding.
    func check<T: AttentionScalar>(_ kind: FavorFeatureKind, as _: T.Type, tolerance: Double) throws {
        let fc = FavorCase(b: 2, h: 2, hk: 2, n: 150, l: 150, d: 8, m: 12, mv: 5, causal: true, kind: kind,
                           epsilon: kind == .relu ? 1e-3 : 0, withState: true, seed: 21)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 77)
        let x = FavorInputs(fc, projection: w).rounded(to: T.self)
        let whole = try runFavor(fc, x, w, as: T.self, backward: false)

        // Pieces, carrying (S̃, z̃, c) through one buffer (each piece's final state is written over
        // its initial state).
        let q = LinearTestTensor<T>(shape: fc.qShape, values: x.q)
        let k = LinearTestTensor<T>(shape: fc.kShape, values: x.k)
        let v = LinearTestTensor<T>(shape: fc.vShape, values: x.v)
        let out = LinearTestTensor<T>(shape: fc.oShape)
        let s = LinearTestTensor<T>(shape: fc.sShape, values: x.s0)
        let z = LinearTestTensor<T>(shape: fc.zShape, values: x.z0)
        let c = LinearTestTensor<T>(shape: fc.zShape, values: x.c0)
        defer { withExtendedLifetime([q, k, v, out, s, z, c]) {} }
        let state = MutableFavorStateView(s: s.mutableView, z: z.mutableView, c: c.mutableView)
        for (start, length) in [(0, 37), (37, 64), (101, 49)] {
            try FavorAttention.forward(query: q.slice(start, length), key: k.slice(start, length),
                                       value: v.slice(start, length), projection: w,
                                       output: out.mutableSlice(start, length),
                                       initialState: state.readOnly, finalState: state, options: fc.options)
        }
        XCTAssertLessThan(linearRelativeError(out.values, whole.out), tolerance, "pieces out \(kind) \(T.self)")
        let shifts = c.values
        let mathS = s.values.enumerated().map { $0.element == 0 ? 0 : $0.element * exp(shifts[$0.offset / fc.mv]) }
        XCTAssertLessThan(linearRelativeError(mathS, whole.sN), tolerance, "pieces S_N \(kind) \(T.self)")

        // Decoder steps from the same initial state.
        let decoder = try FavorDecoder<T>(projection: w, batch: fc.b, heads: fc.h, valueDim: fc.mv,
                                          options: fc.options.features, epsilon: fc.epsilon)
        try decoder.setState(s: x.s0.map { T($0) }, z: x.z0.map { T($0) }, c: x.c0.map { T($0) })
        let stepped = LinearTestTensor<T>(shape: fc.oShape)
        defer { withExtendedLifetime(stepped) {} }
        for token in 0..<fc.n {
            try decoder.step(query: q.token(token), key: k.token(token), value: v.token(token),
                             output: stepped.mutableToken(token))
        }
        XCTAssertLessThan(linearRelativeError(stepped.values, whole.out), tolerance, "decoder out \(kind) \(T.self)")
        let decoderS = decoder.stateS.enumerated().map {
            $0.element == 0 ? 0 : Double($0.element) * exp(Double(decoder.stateC[$0.offset / fc.mv]))
        }
        XCTAssertLessThan(linearRelativeError(decoderS, whole.sN), tolerance, "decoder S_N \(kind) \(T.self)")
    }

    func testOneCallEqualsPiecesEqualsDecoderSteps() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for kind in FavorFeatureKind.allCases {
            try check(kind, as: Double.self, tolerance: 1e-12)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                try check(kind, as: Float.self, tolerance: 1e-5)
            }
        }
    }

    /// Changing q, k, v (and dO) at positions > p leaves out and dq at positions ≤ p unchanged,
    /// bit for bit, on every ISA (p inside a chunk, at a chunk's last row, at a chunk's first).
    func testCausalityBitForBit() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for kind in FavorFeatureKind.allCases {
            let fc = FavorCase(b: 1, h: 2, hk: 1, n: 140, l: 140, d: 6, m: 10, mv: 4, causal: true, kind: kind, seed: 31)
            let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 5)
            let x = FavorInputs(fc, projection: w).rounded(to: Float.self)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                let base = try runFavor(fc, x, w, as: Float.self)
                for p in [0, 20, 63, 64, 127] {
                    var changed = x
                    var random = LinearTestRandom(seed: UInt64(p) + 1)
                    func perturb(_ values: inout [Double], rows: Int, width: Int, heads: Int) {
                        for head in 0..<heads { for r in (p + 1)..<rows { for j in 0..<width {
                            values[(head * rows + r) * width + j] = Double(Float(random.normal() * 3))
                        } } }
                    }
                    perturb(&changed.q, rows: fc.n, width: fc.d, heads: fc.b * fc.h)
                    perturb(&changed.k, rows: fc.l, width: fc.d, heads: fc.b * fc.hk)
                    perturb(&changed.v, rows: fc.l, width: fc.mv, heads: fc.b * fc.hk)
                    perturb(&changed.dout, rows: fc.n, width: fc.mv, heads: fc.b * fc.h)
                    let after = try runFavor(fc, changed, w, as: Float.self)
                    for head in 0..<(fc.b * fc.h) {
                        for r in 0...p {
                            for j in 0..<fc.mv {
                                let index = (head * fc.n + r) * fc.mv + j
                                XCTAssertEqual(after.out[index].bitPattern, base.out[index].bitPattern,
                                               "out[\(head), \(r)] changed, p = \(p), \(kind), \(isa)")
                            }
                            for j in 0..<fc.d {
                                let index = (head * fc.n + r) * fc.d + j
                                XCTAssertEqual(after.dq[index].bitPattern, base.dq[index].bitPattern,
                                               "dq[\(head), \(r)] changed, p = \(p), \(kind), \(isa)")
                            }
                        }
                    }
                    // The perturbation did reach later rows (the test can fail).
                    XCTAssertNotEqual(after.out, base.out)
                }
            }
        }
    }

    /// ‖q_i‖ = ‖k_j‖ = 30 at D = 64: the mathematical features are ~e^−60 and below (they
    /// underflow in float32), yet outputs and gradients are finite and equal the float64
    /// formula, float32 within 1e-5 (outputs) of the float64 formula on the same float32 inputs
    /// and W, gradients within 1e-4 of the float64 library's (the exponents are ≈ 30–140 in
    /// size, so one float32 rounding of u moves a kernel value by up to ~1e-5 relative).
    func testLargeNormsAreStable() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        var worst = 0.0, worstGradient = 0.0
        defer { print("FAVOR norm 30: worst float32 relative error: out \(worst), gradients \(worstGradient)") }
        for kind in [FavorFeatureKind.positive, .hyperbolic, .relu] {
            for causal in [false, true] {
                var fc = FavorCase(b: 1, h: 2, hk: 1, n: 100, l: 100, d: 64, m: 64, mv: 8, causal: causal, kind: kind,
                                   keyLengths: [90], withState: causal, seed: 41)
                fc.epsilon = kind == .relu ? 1e-3 : 0
                let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 9)
                let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: fc.m, dim: fc.d)
                var x = FavorInputs(fc, projection: w)
                x.q = normalizedRows(x.q, width: fc.d, norm: 30)
                x.k = normalizedRows(x.k, width: fc.d, norm: 30)
                let x32 = x.rounded(to: Float.self)
                let want = favorReference(fc, x32, w32)
                XCTAssertTrue(want.out.allSatisfy(\.isFinite) && want.out.contains { $0 != 0 })
                let got64 = try runFavor(fc, x32, w32, as: Double.self)
                XCTAssertLessThan(linearRelativeError(got64.out, want.out), 1e-11, "float64 \(kind) causal=\(causal)")
                if kind.isExponential {
                    // Mathematical features of these keys underflow float32 (below its smallest normal).
                    let smallest = (0..<fc.l).map { j in
                        referenceFeatures(Array(x32.k[(j * fc.d)..<((j + 1) * fc.d)]), w32, kind: kind).min()!
                    }.min()!
                    XCTAssertLessThan(smallest, Double(Float.leastNormalMagnitude), "\(kind)")
                }
                for isa in Runtime.supportedISAs {
                    try Runtime.selectKernels(isa)
                    let got = try runFavor(fc, x32, w32, as: Float.self)
                    for values in [got.out, got.dq, got.dk, got.dv, got.sTilde, got.zTilde, got.ds0, got.dz0] {
                        XCTAssertTrue(values.allSatisfy(\.isFinite), "non-finite \(kind) causal=\(causal) \(isa)")
                    }
                    let error = linearRelativeError(got.out, want.out)
                    worst = max(worst, error)
                    XCTAssertLessThan(error, 1e-5, "out float32 \(kind) causal=\(causal) \(isa)")
                    for (name, a, b) in [("dq", got.dq, got64.dq), ("dk", got.dk, got64.dk), ("dv", got.dv, got64.dv),
                                         ("dS0", got.ds0, got64.ds0), ("dz0", got.dz0, got64.dz0)] {
                        worstGradient = max(worstGradient, linearRelativeError(a, b))
                        XCTAssertLessThan(linearRelativeError(a, b), 1e-4, "\(name) float32 \(kind) causal=\(causal) \(isa)")
                    }
                }
            }
        }
    }
}
