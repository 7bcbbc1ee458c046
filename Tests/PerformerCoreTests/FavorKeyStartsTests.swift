import XCTest
import PerformerCore

/// kv_starts (left padding) for FAVOR+ attention: keys j < kv_starts[b] take no part, as keys
/// j ≥ kv_lengths[b] do (zero features, no stabilizer max), causal and not, with states;
/// checked against the float64 direct formula and finite differences, the call on each batch
/// row's unpadded keys, padding that has no effect, and bad starts.
final class FavorKeyStartsTests: XCTestCase {
    static var cases: [FavorCase] {
        var cases: [FavorCase] = []
        var seed: UInt64 = 50
        for kind in FavorFeatureKind.allCases {
            for causal in [false, true] {
                seed += 1
                // Left, both-side, none, empty (start = length), everything padded (start = L).
                cases.append(FavorCase(b: 5, h: 2, hk: 1, n: 7, l: 7, d: 3, m: 5, mv: 2, causal: causal, kind: kind,
                                       epsilon: 1e-3, keyLengths: [7, 6, 7, 3, 7], keyStarts: [2, 1, 0, 3, 7],
                                       withState: true, strided: true, seed: seed))
            }
        }
        // Chunk boundaries (64): starts inside the second chunk.
        cases.append(FavorCase(b: 2, h: 2, hk: 1, n: 140, l: 140, d: 4, m: 6, mv: 3, causal: true, keyStarts: [70, 64],
                               withState: true, seed: 60))
        cases.append(FavorCase(b: 2, h: 1, hk: 1, n: 30, l: 150, d: 4, m: 6, mv: 3, kind: .hyperbolic,
                               keyLengths: [150, 100], keyStarts: [66, 1], seed: 61))
        return cases
    }

    func projection(_ fc: FavorCase) throws -> FavorProjection {
        try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: fc.seed &+ 100)
    }

    func testForwardMatchesFloat64ReferenceOnEveryISA() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for fc in Self.cases {
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w)
            let want = favorReference(fc, x, w)
            let got = try runFavor(fc, x, w, as: Double.self, backward: false)
            XCTAssertLessThan(linearRelativeError(got.out, want.out), 1e-12, "out float64 \(fc)")
            if fc.hasState {
                XCTAssertLessThan(linearRelativeError(got.sN, want.sN), 1e-12, "S_N float64 \(fc)")
                XCTAssertLessThan(linearRelativeError(got.zN, want.zN), 1e-12, "z_N float64 \(fc)")
            }
            let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: w.numFeatures, dim: w.dim)
            let x32 = x.rounded(to: Float.self)
            let want32 = favorReference(fc, x32, w32)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                let got32 = try runFavor(fc, x32, w32, as: Float.self, backward: false)
                XCTAssertLessThan(linearRelativeError(got32.out, want32.out), 1e-5, "out float32 \(isa) \(fc)")
            }
        }
    }

    func testGradientsMatchFiniteDifferences() throws {
        for fc in Self.cases where fc.n * fc.l <= 100 {
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w)
            let got = try runFavor(fc, x, w, as: Double.self)
            let numeric = favorFiniteDifferences(fc, x, w, shiftReference: got.cN)
            for (name, (a, b)) in zip(["dq", "dk", "dv", "dS0", "dz0"], zip([got.dq, got.dk, got.dv, got.ds0, got.dz0], numeric)) {
                XCTAssertLessThan(linearRelativeError(a, b), 1e-6, "\(name) float64 vs finite differences \(fc)")
            }
        }
    }

    /// Each batch row equals the call on its unpadded keys alone (non-causal: any range; causal,
    /// N = L: left padding, query rows from the start on).
    func testEachBatchRowEqualsTheCallOnItsUnpaddedKeys() throws {
        let cases = [
            FavorCase(b: 3, h: 2, hk: 1, n: 20, l: 90, d: 4, m: 6, mv: 3, keyLengths: [90, 70, 33], keyStarts: [10, 0, 20], seed: 70),
            FavorCase(b: 3, h: 2, hk: 2, n: 90, l: 90, d: 4, m: 6, mv: 3, causal: true, kind: .hyperbolic,
                      keyStarts: [70, 0, 89], seed: 71),
        ]
        for fc in cases {
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w)
            let padded = try runFavor(fc, x, w, as: Double.self)
            for b in 0..<fc.b {
                let (start, end) = (fc.keyStarts![b], fc.keyLengths?[b] ?? fc.l)
                let queries = fc.causal ? start..<fc.n : 0..<fc.n
                var one = fc
                (one.b, one.n, one.l, one.keyLengths, one.keyStarts) = (1, queries.count, end - start, nil, nil)
                var y = FavorInputs(one, projection: w)   // states of the one-row shape (unused)
                y.q = sliceRows(x.q, fc.qShape, batch: b, rows: queries)
                y.dout = sliceRows(x.dout, fc.oShape, batch: b, rows: queries)
                y.k = sliceRows(x.k, fc.kShape, batch: b, rows: start..<end)
                y.v = sliceRows(x.v, fc.vShape, batch: b, rows: start..<end)
                let alone = try runFavor(one, y, w, as: Double.self)
                let label = "\(fc) b=\(b)"
                for (name, got, want) in [
                    ("out", sliceRows(padded.out, fc.oShape, batch: b, rows: queries), alone.out),
                    ("dq", sliceRows(padded.dq, fc.qShape, batch: b, rows: queries), alone.dq),
                    ("dk", sliceRows(padded.dk, fc.kShape, batch: b, rows: start..<end), alone.dk),
                    ("dv", sliceRows(padded.dv, fc.vShape, batch: b, rows: start..<end), alone.dv),
                ] {
                    XCTAssertLessThanOrEqual(linearRelativeError(got, want), 1e-11, "\(name) \(label)")
                }
            }
        }
    }

    func testPaddedKeysHaveNoEffectAndZeroGradients() throws {
        for fc in Self.cases {
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w)
            var changed = x
            scramblePaddedRows(&changed.k, fc.kShape, starts: fc.keyStarts!, lengths: fc.keyLengths, seed: 1)
            scramblePaddedRows(&changed.v, fc.vShape, starts: fc.keyStarts!, lengths: fc.keyLengths, seed: 2)
            let a = try runFavor(fc, x, w, as: Double.self), b = try runFavor(fc, changed, w, as: Double.self)
            for (name, u, v) in [("out", a.out, b.out), ("dq", a.dq, b.dq), ("dk", a.dk, b.dk), ("dv", a.dv, b.dv),
                                 ("S_N", a.sTilde, b.sTilde), ("c_N", a.cN, b.cN), ("dS0", a.ds0, b.ds0)] {
                assertSameBits(u, v, "\(name) \(fc)")
            }
            assertPaddedRowsZero(a.dk, fc.kShape, starts: fc.keyStarts!, lengths: fc.keyLengths, "dk \(fc)")
            assertPaddedRowsZero(a.dv, fc.vShape, starts: fc.keyStarts!, lengths: fc.keyLengths, "dv \(fc)")
        }
    }

    func testBadStartsAreRejectedAndNothingIsWritten() throws {
        let bad: [([Int]?, [Int], PerformerStatus, String)] = [
            (nil, [0, -2], .invalidArgument, "kv_starts[1] = -2 is not in 0...6"),
            (nil, [7, 0], .invalidArgument, "kv_starts[0] = 7 is not in 0...6"),
            ([6, 3], [0, 4], .invalidArgument, "kv_starts[1] = 4 is past kv_lengths[1] = 3"),
            (nil, [1, 1, 1], .shapeMismatch, "kv_starts has 3 entries but batch = 2"),
        ]
        for (lengths, starts, status, message) in bad {
            let fc = FavorCase(b: 2, h: 2, hk: 1, n: 6, l: 6, d: 3, m: 4, mv: 2, keyLengths: lengths, keyStarts: starts)
            let w = try projection(fc)
            let q = LinearTestTensor<Double>(shape: fc.qShape, values: filled(fc.qShape, 0.5))
            let k = LinearTestTensor<Double>(shape: fc.kShape, values: filled(fc.kShape, 0.5))
            let v = LinearTestTensor<Double>(shape: fc.vShape, values: filled(fc.vShape, 0.5))
            let out = LinearTestTensor<Double>(shape: fc.oShape, values: filled(fc.oShape, 7))
            let dq = LinearTestTensor<Double>(shape: fc.qShape, values: filled(fc.qShape, 7))
            let dk = LinearTestTensor<Double>(shape: fc.kShape, values: filled(fc.kShape, 7))
            let dv = LinearTestTensor<Double>(shape: fc.vShape, values: filled(fc.vShape, 7))
            defer { withExtendedLifetime([q, k, v, out, dq, dk, dv]) {} }
            assertThrowsPerformerError(status, containing: message, "forward \(fc)") {
                try FavorAttention.forward(query: q.view, key: k.view, value: v.view, projection: w,
                                           output: out.mutableView, options: fc.options)
            }
            assertThrowsPerformerError(status, containing: message, "backward \(fc)") {
                try FavorAttention.backward(query: q.view, key: k.view, value: v.view, projection: w, outputGradient: out.view,
                                            queryGradient: dq.mutableView, keyGradient: dk.mutableView,
                                            valueGradient: dv.mutableView, options: fc.options)
            }
            for t in [out, dq, dk, dv] { XCTAssertTrue(t.values.allSatisfy { $0 == 7 }, "wrote on error: \(message)") }
        }
    }
}
