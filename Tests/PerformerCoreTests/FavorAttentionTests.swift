#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// FAVOR+ attention against the float64 direct formula with materialized features, in
/// float64 and (on every ISA this CPU runs) float32; gradients against central finite
/// differences; the state contract (pieces, decoder steps); causality; large norms; bad input.
/// Cases `withState` that are not causal attend to a memory (S̃0, z̃0, c0) besides their keys.
final class FavorAttentionTests: XCTestCase {
    static var cases: [FavorCase] {
        var cases: [FavorCase] = []
        var seed: UInt64 = 10
        for kind in FavorFeatureKind.allCases {
            for causal in [false, true] {
                seed += 1
                cases.append(FavorCase(b: 2, h: 2, hk: 2, n: 7, l: causal ? 7 : 9, d: 5, m: 6, mv: 3, causal: causal,
                                       kind: kind, epsilon: kind == .relu ? 1e-3 : 0, seed: seed))
                seed += 1
                cases.append(FavorCase(b: 2, h: 4, hk: 2, n: 9, l: 9, d: 3, m: 5, mv: 4, causal: causal, kind: kind,
                                       epsilon: 1e-3, keyLengths: [9, 4], withState: true, strided: true, seed: seed))
            }
        }
        cases += [
            // Chunk boundaries (64), N ≠ L, M ≠ D, N = 1, L = 1, key length 0, no keys at all.
            FavorCase(b: 1, h: 2, hk: 1, n: 131, l: 131, d: 8, m: 12, mv: 5, causal: true, withState: true, seed: 3),
            FavorCase(b: 1, h: 1, hk: 1, n: 70, l: 129, d: 6, m: 7, mv: 9, kind: .hyperbolic, seed: 4),
            FavorCase(b: 1, h: 2, hk: 1, n: 1, l: 5, d: 4, m: 3, mv: 2, seed: 5),
            // A memory with no keys of the call's own (L = 0), and one over a call with GQA.
            FavorCase(b: 2, h: 2, hk: 1, n: 4, l: 0, d: 4, m: 3, mv: 2, kind: .hyperbolic, withState: true, seed: 12),
            FavorCase(b: 1, h: 1, hk: 1, n: 1, l: 1, d: 4, m: 3, mv: 2, causal: true, withState: true, seed: 6),
            FavorCase(b: 1, h: 3, hk: 1, n: 6, l: 11, d: 7, m: 5, mv: 3, keyLengths: [0], seed: 7),
            FavorCase(b: 2, h: 1, hk: 1, n: 66, l: 66, d: 4, m: 9, mv: 3, causal: true, kind: .hyperbolic,
                      keyLengths: [66, 30], seed: 8),
            FavorCase(b: 1, h: 1, hk: 1, n: 5, l: 5, d: 16, m: 20, mv: 16, causal: true, epsilon: 0.5, seed: 9),
        ]
        return cases
    }

    func projection(_ fc: FavorCase) throws -> FavorProjection {
        try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: fc.seed &+ 100)
    }

    func testForwardMatchesFloat64ReferenceOnEveryISA() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        var worst64 = 0.0, worst32 = 0.0
        defer { print("FAVOR forward over \(Self.cases.count) cases: worst float64 \(worst64), worst float32 \(worst32)") }
        for fc in Self.cases {
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w)
            let want = favorReference(fc, x, w)
            let got = try runFavor(fc, x, w, as: Double.self, backward: false)
            XCTAssertLessThan(linearRelativeError(got.out, want.out), 1e-12, "out float64 \(fc)")
            worst64 = max(worst64, linearRelativeError(got.out, want.out))
            if fc.hasState {
                XCTAssertLessThan(linearRelativeError(got.sN, want.sN), 1e-12, "S_N float64 \(fc)")
                XCTAssertLessThan(linearRelativeError(got.zN, want.zN), 1e-12, "z_N float64 \(fc)")
            }
            // float32: the reference on the float32-rounded inputs and W.
            let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: w.numFeatures, dim: w.dim)
            let x32 = x.rounded(to: Float.self)
            let want32 = favorReference(fc, x32, w32)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                let got32 = try runFavor(fc, x32, w32, as: Float.self, backward: false)
                XCTAssertLessThan(linearRelativeError(got32.out, want32.out), 1e-5, "out float32 \(isa) \(fc)")
                worst32 = max(worst32, linearRelativeError(got32.out, want32.out))
                if fc.hasState {
                    XCTAssertLessThan(linearRelativeError(got32.sN, want32.sN), 1e-5, "S_N float32 \(isa) \(fc)")
                    XCTAssertLessThan(linearRelativeError(got32.zN, want32.zN), 1e-5, "z_N float32 \(isa) \(fc)")
                }
            }
        }
    }

    func testGradientsMatchFiniteDifferencesAndFloat32OnEveryISA() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        // Small cases (the finite differences evaluate the direct formula twice per input).
        let cases = Self.cases.filter { $0.n * $0.l * $0.h * $0.b <= 1000 }
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        var worstFD = 0.0, worst32 = 0.0
        defer { print("FAVOR gradients over \(cases.count) cases: worst float64-vs-FD \(worstFD), worst float32 \(worst32)") }
        for fc in cases {
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w)
            let got = try runFavor(fc, x, w, as: Double.self)
            let numeric = favorFiniteDifferences(fc, x, w, shiftReference: got.cN)
            let analytic = [got.dq, got.dk, got.dv, got.ds0, got.dz0]
            for (name, (a, b)) in zip(["dq", "dk", "dv", "dS0", "dz0"], zip(analytic, numeric)) {
                XCTAssertLessThan(linearRelativeError(a, b), 1e-6, "\(name) float64 vs finite differences \(fc)")
                worstFD = max(worstFD, linearRelativeError(a, b))
            }
            let x32 = x.rounded(to: Float.self)
            let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: w.numFeatures, dim: w.dim)
            let want = try runFavor(fc, x32, w32, as: Double.self)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                let got32 = try runFavor(fc, x32, w32, as: Float.self)
                for (name, a, b) in [("dq", got32.dq, want.dq), ("dk", got32.dk, want.dk), ("dv", got32.dv, want.dv),
                                     ("dS0", got32.ds0, want.ds0), ("dz0", got32.dz0, want.dz0)] {
                    XCTAssertLessThan(linearRelativeError(a, b), 1e-5, "\(name) float32 \(isa) \(fc)")
                    worst32 = max(worst32, linearRelativeError(a, b))
                }
            }
        }
    }
}
