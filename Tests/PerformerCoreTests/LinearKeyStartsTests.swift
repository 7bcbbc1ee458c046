import XCTest
import PerformerCore

/// kv_starts (left padding) for linear attention: φ(k_j) = 0 for j < kv_starts[b] as for
/// j ≥ kv_lengths[b], causal and not, with states; checked against the float64 reference, the
/// call on each batch row's unpadded keys, padding that has no effect, and bad starts.
final class LinearKeyStartsTests: XCTestCase {
    static var cases: [LinearCase] {
        var cases: [LinearCase] = []
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for causal in [false, true] {
                // Left, both-side, none, empty (start = length), everything padded (start = L).
                cases.append(LinearCase(b: 5, h: 4, hk: 2, n: 9, l: 9, d: 3, m: 4, causal: causal, featureMap: map,
                                        epsilon: 1e-3, keyLengths: [9, 7, 9, 4, 9], keyStarts: [3, 2, 0, 4, 9],
                                        withState: causal, strided: true))
            }
        }
        // Chunk boundaries (64): starts inside the second chunk, GQA.
        cases.append(LinearCase(b: 2, h: 2, hk: 1, n: 150, l: 150, d: 9, m: 4, causal: true, keyLengths: [150, 130],
                                keyStarts: [70, 64], withState: true))
        cases.append(LinearCase(b: 2, h: 2, hk: 2, n: 70, l: 140, d: 6, m: 5, featureMap: .relu, epsilon: 1e-3,
                                keyStarts: [65, 1]))
        return cases
    }

    func testMatchesFloat64ReferenceOnEveryISA() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for (index, c) in Self.cases.enumerated() {
            let x = LinearInputs(c, seed: UInt64(300 + index))
            assertClose(try runLinear(c, x, as: Double.self), linearReference(c, x), tolerance: 1e-12, "\(c)")
            let x32 = x.rounded(to: Float.self)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                assertClose(try runLinear(c, x32, as: Float.self), linearReference(c, x32), tolerance: 1e-5, "\(isa) \(c)")
            }
        }
    }

    /// Each batch row equals the call on its unpadded keys alone (non-causal: any range; causal,
    /// N = L: left padding, query rows from the start on).
    func testEachBatchRowEqualsTheCallOnItsUnpaddedKeys() throws {
        let cases = [
            LinearCase(b: 3, h: 2, hk: 1, n: 20, l: 90, d: 5, m: 3, keyLengths: [90, 70, 33], keyStarts: [10, 0, 20]),
            LinearCase(b: 3, h: 2, hk: 2, n: 90, l: 90, d: 5, m: 3, causal: true, keyStarts: [70, 0, 89]),
        ]
        for c in cases {
            let x = LinearInputs(c, seed: 41)
            let padded = try runLinear(c, x, as: Double.self)
            for b in 0..<c.b {
                let (start, end) = (c.keyStarts![b], c.keyLengths?[b] ?? c.l)
                let queries = c.causal ? start..<c.n : 0..<c.n
                var one = c
                (one.b, one.n, one.l, one.keyLengths, one.keyStarts) = (1, queries.count, end - start, nil, nil)
                var y = LinearInputs(one, seed: 1)   // states of the one-row shape (unused)
                y.q = sliceRows(x.q, c.qShape, batch: b, rows: queries)
                y.dout = sliceRows(x.dout, c.oShape, batch: b, rows: queries)
                y.k = sliceRows(x.k, c.kShape, batch: b, rows: start..<end)
                y.v = sliceRows(x.v, c.vShape, batch: b, rows: start..<end)
                let alone = try runLinear(one, y, as: Double.self)
                let label = "\(c) b=\(b)"
                for (name, got, want) in [
                    ("out", sliceRows(padded.out, c.oShape, batch: b, rows: queries), alone.out),
                    ("dq", sliceRows(padded.dq, c.qShape, batch: b, rows: queries), alone.dq),
                    ("dk", sliceRows(padded.dk, c.kShape, batch: b, rows: start..<end), alone.dk),
                    ("dv", sliceRows(padded.dv, c.vShape, batch: b, rows: start..<end), alone.dv),
                ] {
                    XCTAssertLessThanOrEqual(linearRelativeError(got, want), 1e-12, "\(name) \(label)")
                }
            }
        }
    }

    func testPaddedKeysHaveNoEffectAndZeroGradients() throws {
        for c in Self.cases {
            let x = LinearInputs(c, seed: 5)
            var changed = x
            scramblePaddedRows(&changed.k, c.kShape, starts: c.keyStarts!, lengths: c.keyLengths, seed: 1)
            scramblePaddedRows(&changed.v, c.vShape, starts: c.keyStarts!, lengths: c.keyLengths, seed: 2)
            let a = try runLinear(c, x, as: Double.self), b = try runLinear(c, changed, as: Double.self)
            for (name, u, w) in [("out", a.out, b.out), ("dq", a.dq, b.dq), ("dk", a.dk, b.dk), ("dv", a.dv, b.dv),
                                 ("S_N", a.sN, b.sN), ("z_N", a.zN, b.zN), ("dS0", a.ds0, b.ds0)] {
                assertSameBits(u, w, "\(name) \(c)")
            }
            assertPaddedRowsZero(a.dk, c.kShape, starts: c.keyStarts!, lengths: c.keyLengths, "dk \(c)")
            assertPaddedRowsZero(a.dv, c.vShape, starts: c.keyStarts!, lengths: c.keyLengths, "dv \(c)")
        }
    }

    func testBadStartsAreRejectedAndNothingIsWritten() throws {
        let bad: [([Int]?, [Int], PerformerStatus, String)] = [
            (nil, [0, -2], .invalidArgument, "kv_starts[1] = -2 is not in 0...6"),
            (nil, [7, 0], .invalidArgument, "kv_starts[0] = 7 is not in 0...6"),
            ([6, 3], [0, 4], .invalidArgument, "kv_starts[1] = 4 is past kv_lengths[1] = 3"),
            (nil, [1], .shapeMismatch, "kv_starts has 1 entries but batch = 2"),
        ]
        for (lengths, starts, status, message) in bad {
            for causal in [false, true] {
                let c = LinearCase(b: 2, h: 2, hk: 1, n: 6, l: 6, d: 3, m: 2, causal: causal, keyLengths: lengths,
                                   keyStarts: starts)
                let q = LinearTestTensor<Double>(shape: c.qShape, values: filled(c.qShape, 0.5))
                let k = LinearTestTensor<Double>(shape: c.kShape, values: filled(c.kShape, 0.5))
                let v = LinearTestTensor<Double>(shape: c.vShape, values: filled(c.vShape, 0.5))
                let out = LinearTestTensor<Double>(shape: c.oShape, values: filled(c.oShape, 7))
                let dq = LinearTestTensor<Double>(shape: c.qShape, values: filled(c.qShape, 7))
                let dk = LinearTestTensor<Double>(shape: c.kShape, values: filled(c.kShape, 7))
                let dv = LinearTestTensor<Double>(shape: c.vShape, values: filled(c.vShape, 7))
                defer { withExtendedLifetime([q, k, v, out, dq, dk, dv]) {} }
                assertThrowsPerformerError(status, containing: message, "forward \(c)") {
                    try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView,
                                                options: c.options)
                }
                assertThrowsPerformerError(status, containing: message, "backward \(c)") {
                    try LinearAttention.backward(query: q.view, key: k.view, value: v.view, outputGradient: out.view,
                                                 queryGradient: dq.mutableView, keyGradient: dk.mutableView,
                                                 valueGradient: dv.mutableView, options: c.options)
                }
                for t in [out, dq, dk, dv] { XCTAssertTrue(t.values.allSatisfy { $0 == 7 }, "wrote on error: \(message)") }
            }
        }
    }
}
