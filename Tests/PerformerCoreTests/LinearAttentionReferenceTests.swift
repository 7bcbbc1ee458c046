import XCTest
import PerformerCore

/// Linear attention against the float64 direct reference (explicit N × L masked similarity
/// matrices), in float64 and, on every ISA this CPU runs, in float32.
final class LinearAttentionReferenceTests: XCTestCase {
    /// Shapes and options covering every feature map, causal and not, key lengths, GQA, M ≠ D,
    /// N = 1, N ≠ L, odd sizes, chunk boundaries (64), initial/final state and strided views.
    static var cases: [LinearCase] {
        var cases: [LinearCase] = []
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for causal in [false, true] {
                // Causal row 0 sees one key: o_0 = v_0 · a/(a + ε), so dq_0 is a difference of nearly
                // equal terms, ill-conditioned when a = φ(q_0)ᵀφ(k_0) is tiny (relu's sparse features at
                // D = 5) and ε = 1e-6; no float32 algorithm meets a relative bound there. ε = 1e-3
                // keeps this relu case well-conditioned; the next relu case keeps ε = 1e-6.
                cases.append(LinearCase(b: 2, h: 2, hk: 2, n: 7, l: 7, d: 5, m: 3, causal: causal, featureMap: map,
                                        epsilon: map == .relu ? 1e-3 : 1e-6))
                cases.append(LinearCase(b: 2, h: 4, hk: 2, n: 9, l: 9, d: 3, m: 6, causal: causal, featureMap: map,
                                        keyLengths: [9, 4], withState: causal, strided: true))
            }
        }
        cases += [
            // With one key and a tiny ε, o ≈ v and dq, dk are pure cancellation; ε = 0.1 keeps
            // the gradients well-conditioned so a relative bound means something.
            LinearCase(b: 1, h: 1, hk: 1, n: 1, l: 1, d: 1, m: 1, causal: true, epsilon: 0.1),
            LinearCase(b: 1, h: 1, hk: 1, n: 1, l: 1, d: 4, m: 2, causal: true, withState: true),
            LinearCase(b: 1, h: 2, hk: 1, n: 1, l: 5, d: 4, m: 2),
            LinearCase(b: 1, h: 2, hk: 1, n: 6, l: 1, d: 4, m: 2, epsilon: 0.1),
            LinearCase(b: 1, h: 3, hk: 1, n: 13, l: 11, d: 7, m: 5, keyLengths: [0]),
            LinearCase(b: 2, h: 1, hk: 1, n: 150, l: 150, d: 9, m: 4, causal: true, keyLengths: [150, 97], withState: true),
            LinearCase(b: 1, h: 2, hk: 2, n: 129, l: 131, d: 6, m: 11, featureMap: .relu, strided: true),
            LinearCase(b: 1, h: 2, hk: 1, n: 65, l: 65, d: 3, m: 2, causal: true, featureMap: .identity, epsilon: 0, withState: true),
            LinearCase(b: 1, h: 1, hk: 1, n: 64, l: 64, d: 2, m: 3, causal: true, featureMap: .eluPlusOne, epsilon: 0.5),
            LinearCase(b: 1, h: 1, hk: 1, n: 17, l: 17, d: 48, m: 40, causal: true, withState: true),
        ]
        return cases
    }

    func testFloat64MatchesDirectReference() throws {
        for (index, c) in Self.cases.enumerated() {
            let x = LinearInputs(c, seed: UInt64(index + 1))
            let got = try runLinear(c, x, as: Double.self)
            assertClose(got, linearReference(c, x), tolerance: 1e-12, "\(c)")
        }
    }

    func testFloat32MatchesReferenceOnEveryISA() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for isa in Runtime.supportedISAs {
            try Runtime.selectKernels(isa)
            for (index, c) in Self.cases.enumerated() {
                let x = LinearInputs(c, seed: UInt64(100 + index)).rounded(to: Float.self)
                let got = try runLinear(c, x, as: Float.self)
                assertClose(got, linearReference(c, x), tolerance: 1e-5, "\(isa) \(c)")
            }
        }
    }

    /// The reference itself is checked by finite differences below; this checks the library's
    /// float64 gradients directly against central differences of its own forward, for the loss
    /// L = Σ W∘out + Σ W_S∘S_N + Σ W_z∘z_N (so dout = W, dS_N = W_S, dz_N = W_z). The gradient
    /// flows through the denominator, through φ, and into the initial state.
    func testFloat64GradientsMatchFiniteDifferences() throws {
        var cases: [LinearCase] = []
        for map in LinearAttentionOptions.FeatureMap.allCases {
            cases.append(LinearCase(b: 1, h: 2, hk: 1, n: 5, l: 5, d: 3, m: 2, causal: true, featureMap: map,
                                    epsilon: 1e-3, keyLengths: [4], withState: true))
            cases.append(LinearCase(b: 1, h: 2, hk: 2, n: 4, l: 6, d: 3, m: 2, causal: false, featureMap: map, epsilon: 1e-3))
        }
        for (index, c) in cases.enumerated() {
            let x = LinearInputs(c, seed: UInt64(500 + index))
            let analytic = try runLinear(c, x, as: Double.self)
            let reference = linearReference(c, x)
            func loss(_ y: LinearInputs) throws -> Double {
                let r = try runLinear(c, y, as: Double.self)
                var total = zip(r.out, x.dout).reduce(0) { $0 + $1.0 * $1.1 }
                if c.withState {
                    total += zip(r.sN, x.dsN).reduce(0) { $0 + $1.0 * $1.1 }
                    total += zip(r.zN, x.dzN).reduce(0) { $0 + $1.0 * $1.1 }
                }
                return total
            }
            let step = 1e-6
            let fields: [(String, WritableKeyPath<LinearInputs, [Double]>, [Double], [Double])] = [
                ("dq", \.q, analytic.dq, reference.dq), ("dk", \.k, analytic.dk, reference.dk),
                ("dv", \.v, analytic.dv, reference.dv),
            ] + (c.withState ? [("dS0", \.s0, analytic.ds0, reference.ds0), ("dz0", \.z0, analytic.dz0, reference.dz0)] : [])
            for (name, path, gradient, referenceGradient) in fields {
                var numeric = [Double](repeating: 0, count: gradient.count)
                for i in 0..<gradient.count {
                    var plus = x, minus = x
                    plus[keyPath: path][i] += step
                    minus[keyPath: path][i] -= step
                    numeric[i] = (try loss(plus) - loss(minus)) / (2 * step)
                }
                XCTAssertLessThan(linearRelativeError(gradient, numeric), 1e-6, "\(name) vs finite differences: \(c)")
                XCTAssertLessThan(linearRelativeError(referenceGradient, numeric), 1e-6, "reference \(name) vs finite differences: \(c)")
            }
        }
    }
}
