#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

final class FavorProjectionTests: XCTestCase {
    // MARK: the generator

    func testMixerReproducesPublishedSplitmix64() {
        // splitmix64 started from state 0 outputs 0xE220A8397B1DCDAF first (its reference C code).
        XCTAssertEqual(FavorRandom.mix64(FavorRandom.gamma), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(FavorRandom.mix64(0), 0)
    }

    func testGoldenWordsAndNormalsForSeedZero() {
        // Values from an independent Python implementation of docs/FAVOR.md's specification.
        let stream = FavorRandom(seed: 0, draw: 0, purpose: 0)
        XCTAssertEqual(stream.word(0), 0x2CE8_09AE_01CA_B7D7)
        XCTAssertEqual(stream.word(1), 0x7924_AC0F_ED68_CB52)
        let expected = [-1.8394371222171952, 0.3125146678787587, 0.5962596985207472, 0.7026771302172663]
        for (i, value) in expected.enumerated() {
            XCTAssertEqual(stream.normal(UInt64(i)), value, accuracy: 1e-14 * abs(value))
        }
        XCTAssertEqual(stream.normals(from: 0, count: 4), (0..<4).map { stream.normal(UInt64($0)) })
        XCTAssertEqual(stream.normals(from: 1, count: 2), [stream.normal(1), stream.normal(2)])
    }

    func testNormalsHaveUnitMomentsAndStreamsDiffer() {
        let stream = FavorRandom(seed: 12345, draw: 0, purpose: 0)
        let n = 200_000
        let values = stream.normals(from: 0, count: n)
        let mean = values.reduce(0, +) / Double(n)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        let fourth = values.reduce(0) { $0 + pow($1, 4) } / Double(n)
        XCTAssertEqual(mean, 0, accuracy: 5 / Double(n).squareRoot())
        XCTAssertEqual(variance, 1, accuracy: 5 * (2 / Double(n)).squareRoot())
        XCTAssertEqual(fourth, 3, accuracy: 5 * (96 / Double(n)).squareRoot())
        XCTAssertNotEqual(FavorRandom(seed: 1, draw: 0, purpose: 0).word(0), FavorRandom(seed: 0, draw: 1, purpose: 0).word(0))
        XCTAssertNotEqual(FavorRandom(seed: 0, draw: 0, purpose: 1).word(0), FavorRandom(seed: 0, draw: 0, purpose: 0).word(0))
    }

    // MARK: drawing

    func testGoldenMatricesForSeedZero() throws {
        // From the same independent implementation; a platform whose libm differs by more than
        // rounding, or any change to the documented draw order, breaks these.
        let w = try FavorProjection(dim: 4, numFeatures: 6, seed: 0)
        let expected = [-2.1576836893772686, 0.5087864148384577, -0.5671854830337261, 0.9029584507771773,
                        0.3602869098463309, -0.6797506127055982, 1.3795231761440137, 2.1104831384783385]
        for (i, value) in expected.enumerated() {
            XCTAssertEqual(w.matrix[i], value, accuracy: 1e-13 * abs(value), "W[\(i / 4)][\(i % 4)]")
        }
        var redrawn = w
        try redrawn.redraw()
        let expectedDraw1 = [1.1518375294284149, -1.0568986007736398, -0.6270730051702491, 0.7575011927935732]
        for (i, value) in expectedDraw1.enumerated() {
            XCTAssertEqual(redrawn.matrix[i], value, accuracy: 1e-13 * abs(value))
        }
        let iid = try FavorProjection(dim: 3, numFeatures: 2, kind: .iid, norms: .fixed, seed: 7)
        let expectedIID = [-1.134511768416011, 1.2871273844748634, 0.2370361648788482,
                           -0.6989094630030673, 0.8983650926895962, 1.305551884362156]
        for (i, value) in expectedIID.enumerated() {
            XCTAssertEqual(iid.matrix[i], value, accuracy: 1e-13 * abs(value))
        }
    }

    func testSameSeedSameMatrixAndRedrawAdvances() throws {
        for kind in FavorProjectionKind.allCases {
            let a = try FavorProjection(dim: 8, numFeatures: 20, kind: kind, seed: 42)
            let b = try FavorProjection(dim: 8, numFeatures: 20, kind: kind, seed: 42)
            XCTAssertEqual(a.matrix, b.matrix)
            XCTAssertEqual(a.matrixFloat, a.matrix.map { Float($0) })
            XCTAssertNotEqual(a.matrix, try FavorProjection(dim: 8, numFeatures: 20, kind: kind, seed: 43).matrix)
            var c = a
            try c.redraw()
            XCTAssertEqual(c.draw, 1)
            XCTAssertNotEqual(c.matrix, a.matrix)
            XCTAssertEqual(c.matrix, try FavorProjection(dim: 8, numFeatures: 20, kind: kind, seed: 42, draw: 1).matrix)
            try c.redraw()
            XCTAssertEqual(c.draw, 2)
            XCTAssertEqual(c.matrix, try FavorProjection(dim: 8, numFeatures: 20, kind: kind, seed: 42, draw: 2).matrix)
            // The first rows do not depend on how many rows are drawn.
            let longer = try FavorProjection(dim: 8, numFeatures: 27, kind: kind, seed: 42)
            XCTAssertEqual(Array(longer.matrix.prefix(20 * 8)), a.matrix)
        }
    }

    func testOrthogonalRowsWithinEachBlock() throws {
        let d = 16, m = 40  // blocks of 16, 16 and 8 rows
        for norms in FavorNorms.allCases {
            let w = try FavorProjection(dim: d, numFeatures: m, norms: norms, seed: 3)
            let lengths = (0..<m).map { i in (0..<d).reduce(0.0) { $0 + w[i, $1] * w[i, $1] }.squareRoot() }
            for block in 0..<3 {
                let rows = (block * d)..<min(m, (block + 1) * d)
                for i in rows {
                    for j in rows {
                        let dot = (0..<d).reduce(0.0) { $0 + w[i, $1] * w[j, $1] } / (lengths[i] * lengths[j])
                        XCTAssertEqual(dot, i == j ? 1 : 0, accuracy: 1e-12, "rows \(i), \(j)")
                    }
                }
            }
            // Rows of different blocks are independent, so not orthogonal.
            let crossDot = (0..<d).reduce(0.0) { $0 + w[0, $1] * w[d, $1] } / (lengths[0] * lengths[d])
            XCTAssertGreaterThan(abs(crossDot), 1e-6)
            if norms == .fixed {
                for i in 0..<m { XCTAssertEqual(lengths[i], Double(d).squareRoot(), accuracy: 1e-12) }
            }
        }
    }

    func testChiNormsHaveTheChiMean() throws {
        // E‖g‖ = √2·Γ((D+1)/2)/Γ(D/2) for g ~ N(0, I_D); Var = D − mean².
        for d in [3, 8] {
            let m = 3000
            let mean = 2.0.squareRoot() * exp(lgamma(Double(d + 1) / 2) - lgamma(Double(d) / 2))
            let sd = (Double(d) - mean * mean).squareRoot()
            for kind in FavorProjectionKind.allCases {
                let w = try FavorProjection(dim: d, numFeatures: m, kind: kind, seed: 11)
                let lengths = (0..<m).map { i in (0..<d).reduce(0.0) { $0 + w[i, $1] * w[i, $1] }.squareRoot() }
                let sample = lengths.reduce(0, +) / Double(m)
                XCTAssertEqual(sample, mean, accuracy: 4 * sd / Double(m).squareRoot(), "D = \(d), \(kind)")
                let fixed = try FavorProjection(dim: d, numFeatures: 5, kind: kind, norms: .fixed, seed: 11)
                for i in 0..<5 {
                    let length = (0..<d).reduce(0.0) { $0 + fixed[i, $1] * fixed[i, $1] }.squareRoot()
                    XCTAssertEqual(length, Double(d).squareRoot(), accuracy: 1e-12)
                }
            }
        }
    }

    func testOrthogonalEntriesAreMarginallyStandardNormal() throws {
        // With chi norms each row of an orthogonal block is distributed as N(0, I): entries have
        // mean 0 and variance 1.
        let d = 6
        var values = [Double]()
        for seed in 0..<300 {
            values += try FavorProjection(dim: d, numFeatures: d, seed: UInt64(seed)).matrix
        }
        let n = Double(values.count)
        let mean = values.reduce(0, +) / n
        let variance = values.reduce(0) { $0 + $1 * $1 } / n
        XCTAssertEqual(mean, 0, accuracy: 5 / n.squareRoot())
        XCTAssertEqual(variance, 1, accuracy: 5 * (2 / n).squareRoot())
    }

    func testCallerMatrixRoundTrip() throws {
        let values: [Double] = [0.5, -1, 2, 0.25, 3, -0.125]
        let w = try FavorProjection(matrix: values, numFeatures: 2, dim: 3)
        XCTAssertEqual(w.matrix, values)
        XCTAssertEqual(w.matrixFloat, values.map { Float($0) })
        XCTAssertEqual(w[1, 2], -0.125)
        XCTAssertTrue(w.isCallerMatrix)
        XCTAssertNil(w.seed)
        let fromFloat = try FavorProjection(matrix: values.map { Float($0) }, numFeatures: 2, dim: 3)
        XCTAssertEqual(fromFloat.matrix, values)
        let drawn = try FavorProjection(dim: 5, numFeatures: 7, seed: 9)
        XCTAssertEqual(try FavorProjection(matrix: drawn.matrix, numFeatures: 7, dim: 5).matrix, drawn.matrix)
        var copy = w
        XCTAssertThrowsError(try copy.redraw()) { error in
            XCTAssertEqual((error as? PerformerError)?.status, .invalidArgument)
        }
        XCTAssertEqual(copy.matrix, values)
    }

    func testBadArgumentsAreRejectedWithTheirNames() {
        func expect(_ status: PerformerStatus, _ fragment: String, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { error in
                let e = error as? PerformerError
                XCTAssertEqual(e?.status, status, line: line)
                XCTAssertTrue(e?.message.contains(fragment) ?? false, "\(String(describing: e))", line: line)
            }
        }
        expect(.invalidArgument, "num_features = 0") { _ = try FavorProjection(dim: 4, numFeatures: 0) }
        expect(.invalidArgument, "dim = 0") { _ = try FavorProjection(dim: 0, numFeatures: 4) }
        expect(.invalidArgument, "dim = -3") { _ = try FavorProjection(dim: -3, numFeatures: 4, kind: .iid) }
        expect(.sizeOverflow, "num_features × dim") { _ = try FavorProjection(dim: 1 << 40, numFeatures: 1 << 40) }
        expect(.shapeMismatch, "W has 5 entries") { _ = try FavorProjection(matrix: [1, 2, 3, 4, 5] as [Double], numFeatures: 2, dim: 3) }
        expect(.invalidArgument, "W[1][1] = nan") { _ = try FavorProjection(matrix: [1, 2, 3, .nan] as [Double], numFeatures: 2, dim: 2) }
        expect(.invalidArgument, "num_features = 0") { _ = try FavorProjection(matrix: [] as [Double], numFeatures: 0, dim: 2) }
        expect(.invalidArgument, "kind = \"gaussian\"") { _ = try FavorProjectionKind(name: "gaussian") }
        expect(.invalidArgument, "kind = 7") { _ = try FavorProjectionKind(code: 7) }
        expect(.invalidArgument, "norms = \"unit\"") { _ = try FavorNorms(name: "unit") }
        expect(.invalidArgument, "norms = -1") { _ = try FavorNorms(code: -1) }
        XCTAssertEqual(try FavorProjectionKind(name: "iid"), .iid)
        XCTAssertEqual(try FavorNorms(code: 1), .fixed)
    }
}
