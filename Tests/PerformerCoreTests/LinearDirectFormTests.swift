import XCTest
import PerformerCore

/// The direct form of small linear-attention forwards (no C × M state: o_i = Σ_j a_ij v_j /
/// (Σ_j a_ij + ε), a_ij = φ(q_i)·φ(k_j)) against the float64 reference, at the shapes where it
/// is easiest to get wrong, in float64 and on every ISA in float32; and against the chunked
/// kernel the same calls take with the direct form switched off.
final class LinearDirectFormTests: XCTestCase {
    /// Cases that run the direct form (each is asserted to), with the inputs they attack.
    static var cases: [(String, LinearCase, (inout LinearInputs) -> Void)] {
        var cases: [(String, LinearCase, (inout LinearInputs) -> Void)] = []
        let none: (inout LinearInputs) -> Void = { _ in }
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for causal in [false, true] {
                cases.append(("one query, one key \(map)",
                              LinearCase(n: 1, l: 1, d: 64, m: 64, causal: causal, featureMap: map, epsilon: 0.1), none))
                cases.append(("GQA, strided views \(map)",
                              LinearCase(b: 2, h: 4, hk: 2, n: 5, l: 5, d: 31, m: 17, causal: causal, featureMap: map,
                                         epsilon: 1e-3, strided: true), none))
                cases.append(("un-normalized \(map)",
                              LinearCase(b: 1, h: 2, hk: 1, n: 3, l: 3, d: 16, m: 8, causal: causal, featureMap: map,
                                         normalize: false, mixedSigns: map == .identity), none))
            }
        }
        cases += [
            ("no keys", LinearCase(n: 2, l: 0, d: 8, m: 8), none),
            ("no keys, eps = 0", LinearCase(n: 2, l: 0, d: 8, m: 8, epsilon: 0), none),
            ("one query against many keys", LinearCase(b: 1, h: 2, hk: 1, n: 1, l: 64, d: 64, m: 64), none),
            ("many queries against one key", LinearCase(b: 1, h: 1, hk: 1, n: 300, l: 1, d: 32, m: 32, epsilon: 0.1), none),
            ("every key masked by starts = lengths",
             LinearCase(b: 2, h: 2, hk: 1, n: 3, l: 4, d: 32, m: 16, keyLengths: [2, 4], keyStarts: [2, 4]), none),
            ("key starts and lengths, causal: early rows see nothing",
             LinearCase(b: 2, h: 1, hk: 1, n: 6, l: 6, d: 32, m: 16, causal: true, keyLengths: [5, 6], keyStarts: [2, 0]), none),
            ("key starts, non-causal, N ≠ L",
             LinearCase(b: 2, h: 2, hk: 2, n: 3, l: 7, d: 32, m: 16, keyLengths: [7, 3], keyStarts: [4, 1], strided: true), none),
            ("relu, eps = 0, rows whose features are all 0",
             LinearCase(b: 1, h: 1, hk: 1, n: 4, l: 4, d: 32, m: 16, causal: true, featureMap: .relu, epsilon: 0),
             { x in for f in 0..<32 { x.q[32 + f] = -abs(x.q[32 + f]) - 0.5; x.k[f] = -abs(x.k[f]) - 0.5 } }),
            // Small queries keep φ(q)·Σφ(k) (std ≈ 0.3) well away from −ε: a relative bound then holds.
            ("identity, mixed signs, normalized",
             LinearCase(b: 1, h: 2, hk: 1, n: 4, l: 6, d: 32, m: 16, featureMap: .identity, epsilon: 1, mixedSigns: true),
             { x in for i in x.q.indices { x.q[i] *= 0.02 } }),
            ("elu+1 queries whose features underflow (shifted rows)",
             LinearCase(b: 1, h: 1, hk: 1, n: 3, l: 3, d: 16, m: 8, causal: true),
             { x in for f in 0..<16 { x.q[16 + f] = -100 - Double(f); x.q[32 + f] = -60 + Double(f) } }),
        ]
        return cases
    }

    func testAdversarialShapesTakeTheDirectForm() {
        for (name, c, _) in Self.cases {
            XCTAssertTrue(LinearAttention.runsDirectForm(queryCount: c.n, keyCount: c.l, headDim: c.d, valueDim: c.m,
                                                         causal: c.causal), name)
        }
    }

    func testDirectFormMatchesFloat64Reference() throws {
        for (index, (name, c, adjust)) in Self.cases.enumerated() {
            var x = LinearInputs(c, seed: UInt64(700 + index))
            adjust(&x)
            let got = try runLinear(c, x, as: Double.self), want = linearReference(c, x)
            // The forward's outputs: the backward (the chunked kernel) has its own tests.
            XCTAssertLessThanOrEqual(linearRelativeError(got.out, want.out), 1e-12, "\(name): out")
            XCTAssertLessThanOrEqual(linearRelativeError(got.den, want.den), 1e-12, "\(name): denominators")
        }
    }

    func testDirectFormFloat32MatchesReferenceOnEveryISA() throws {
        try forEachSupportedISA { isa in
            for (index, (name, c, adjust)) in Self.cases.enumerated() {
                var x = LinearInputs(c, seed: UInt64(800 + index))
                adjust(&x)
                x = x.rounded(to: Float.self)
                let got = try runLinear(c, x, as: Float.self)
                // The forward outputs only: the backward (the chunked kernel) has its own tests,
                // and the shifted rows' dq is ill-conditioned in float32.
                let want = linearReference(c, x)
                XCTAssertLessThanOrEqual(linearRelativeError(got.out, want.out), 1e-5, "\(isa) \(name): out")
                XCTAssertLessThanOrEqual(linearRelativeError(got.den, want.den), 1e-5, "\(isa) \(name): denominators")
            }
        }
    }

    /// The same calls through the chunked kernel (direct form off) agree to rounding.
    func testDirectFormAgreesWithTheChunkedKernel() throws {
        defer { LinearAttention.directFormEnabled = true }
        for (index, (name, c, adjust)) in Self.cases.enumerated() {
            var x = LinearInputs(c, seed: UInt64(900 + index))
            adjust(&x)
            LinearAttention.directFormEnabled = true
            let direct = try runLinear(c, x, as: Double.self)
            LinearAttention.directFormEnabled = false
            XCTAssertFalse(LinearAttention.runsDirectForm(queryCount: c.n, keyCount: c.l, headDim: c.d, valueDim: c.m,
                                                          causal: c.causal))
            let chunked = try runLinear(c, x, as: Double.self)
            XCTAssertLessThanOrEqual(linearRelativeError(direct.out, chunked.out), 1e-13, "\(name): out")
            XCTAssertLessThanOrEqual(linearRelativeError(direct.den, chunked.den), 1e-13, "\(name): denominators")
        }
    }

    /// Mid-size and long problems keep the chunked kernel; so does any call with a state.
    func testLargerProblemsKeepTheChunkedKernel() {
        for n in [64, 128, 1024] {
            for causal in [false, true] {
                XCTAssertFalse(LinearAttention.runsDirectForm(queryCount: n, keyCount: n, headDim: 64, valueDim: 64,
                                                              causal: causal), "N = L = \(n) causal=\(causal)")
            }
        }
        XCTAssertFalse(LinearAttention.runsDirectForm(queryCount: 1, keyCount: 65, headDim: 64, valueDim: 64, causal: false),
                       "more keys than the direct scratch holds")
        XCTAssertFalse(LinearAttention.runsDirectForm(queryCount: 0, keyCount: 4, headDim: 64, valueDim: 64, causal: false),
                       "a state-only problem")
    }

    /// With a state to return or start from, a small call gives the chunked kernel's bits:
    /// prefill + carried state equals the stateful chunked call exactly, whatever the form.
    func testStatefulCallsTakeTheChunkedKernel() throws {
        var c = LinearCase(n: 1, l: 1, d: 64, m: 64, causal: true, withState: true)
        c.epsilon = 0.1
        let x = LinearInputs(c, seed: 1000)
        let withDirect = try runLinear(c, x, as: Float.self)
        LinearAttention.directFormEnabled = false
        defer { LinearAttention.directFormEnabled = true }
        let chunked = try runLinear(c, x, as: Float.self)
        XCTAssertEqual(withDirect.out, chunked.out)
        XCTAssertEqual(withDirect.sN, chunked.sN)
    }
}
