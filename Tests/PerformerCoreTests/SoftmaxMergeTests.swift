import PerformerCore
import XCTest

/// SoftmaxAttention.merge: two partial results merged by their log-sum-exp equal a float64
/// reference of the formula and the forward over all keys; empty sides (lse −inf) add nothing,
/// a row empty on both sides is 0 with lse −inf; errors write nothing.
final class SoftmaxMergeTests: XCTestCase {
    private func merged<T: AttentionScalar>(_ a: Tensor<T>, _ la: Tensor<T>, _ b: Tensor<T>, _ lb: Tensor<T>,
                                            into out: inout Tensor<T>, _ lse: inout Tensor<T>) throws(PerformerError) {
        try a.withView { (av) throws(PerformerError) in
            try la.withView { (lav) throws(PerformerError) in
                try b.withView { (bv) throws(PerformerError) in
                    try lb.withView { (lbv) throws(PerformerError) in
                        try out.withMutableView { (ov) throws(PerformerError) in
                            try lse.withMutableView { (lv) throws(PerformerError) in
                                try SoftmaxAttention.merge(outputA: av, logSumExpA: lav, outputB: bv, logSumExpB: lbv,
                                                           output: ov, logSumExp: lv)
                            }
                        }
                    }
                }
            }
        }
    }

    private func forward<T: AttentionScalar>(_ q: DenseTensor, _ k: DenseTensor, _ v: DenseTensor, keys: Range<Int>,
                                             as _: T.Type) throws -> (Tensor<T>, Tensor<T>) {
        let query = q.tensor(T.self), key = k.slicingRows(keys).tensor(T.self), value = v.slicingRows(keys).tensor(T.self)
        var out = try Tensor<T>(shape: SIMD4(q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
        var lse = try Tensor<T>(shape: SIMD4(q.shape[0], q.shape[1], q.shape[2], 1))
        try query.withView { qv in try key.withView { kv in try value.withView { vv in
            try out.withMutableView { ov in try lse.withMutableView { lv in
                try SoftmaxAttention.forward(query: qv, key: kv, value: vv, output: ov, logSumExp: lv)
            } }
        } } }
        return (out, lse)
    }

    private func checkAgainstWhole<T: AttentionScalar>(_: T.Type) throws {
        var rng = SplitMix64(seed: 77)
        let q = DenseTensor.random(SIMD4(2, 2, 7, 8), &rng), k = DenseTensor.random(SIMD4(2, 2, 19, 8), &rng)
        let v = DenseTensor.random(SIMD4(2, 2, 19, 5), &rng)
        let (whole, wholeLse) = try forward(q, k, v, keys: 0..<19, as: T.self)
        let (a, la) = try forward(q, k, v, keys: 0..<6, as: T.self)
        let (b, lb) = try forward(q, k, v, keys: 6..<19, as: T.self)
        var out = try Tensor<T>(shape: whole.shape), lse = try Tensor<T>(shape: wholeLse.shape)
        try merged(a, la, b, lb, into: &out, &lse)
        let tolerance = T.self == Float.self ? 1e-6 : 1e-13
        XCTAssertLessThanOrEqual(relativeError(DenseTensor(out), DenseTensor(whole)), tolerance, "\(T.self) out")
        XCTAssertLessThanOrEqual(relativeError(DenseTensor(lse), DenseTensor(wholeLse)), tolerance, "\(T.self) lse")
        // The other order: the same values to rounding (in place is Tests/c/test_merge.c's).
        var swapped = try Tensor<T>(shape: whole.shape), swappedLse = try Tensor<T>(shape: wholeLse.shape)
        try merged(b, lb, a, la, into: &swapped, &swappedLse)
        XCTAssertLessThanOrEqual(relativeError(DenseTensor(swapped), DenseTensor(out)), tolerance, "\(T.self) b, a")
    }

    func testMergeOfTwoKeyPartsIsTheForwardOverAllKeys() throws {
        try checkAgainstWhole(Float.self)
        try checkAgainstWhole(Double.self)
    }

    func testEmptySidesAddNothingAndEmptyRowsAreZero() throws {
        let shape = SIMD4(1, 1, 3, 2), rows = SIMD4(1, 1, 3, 1)
        let inf = Float.infinity
        // Row 0: only a; row 1: only b (a's row is NaN and must not be read); row 2: neither.
        let a = try Tensor<Float>(shape: shape, elements: [1, 2, .nan, .nan, 7, 7])
        let la = try Tensor<Float>(shape: rows, elements: [0.5, -inf, -inf])
        let b = try Tensor<Float>(shape: shape, elements: [9, 9, 3, 4, .nan, 1])
        let lb = try Tensor<Float>(shape: rows, elements: [-inf, 2, -inf])
        var out = try Tensor<Float>(shape: shape, repeating: 5), lse = try Tensor<Float>(shape: rows, repeating: 5)
        try merged(a, la, b, lb, into: &out, &lse)
        XCTAssertEqual(out.elements, [1, 2, 3, 4, 0, 0])
        XCTAssertEqual(lse.elements, [0.5, 2, -inf])
    }

    func testErrorsNameTheArgumentAndWriteNothing() throws {
        let shape = SIMD4(1, 2, 3, 2), rows = SIMD4(1, 2, 3, 1)
        let a = try Tensor<Double>(shape: shape), b = try Tensor<Double>(shape: shape)
        var la = try Tensor<Double>(shape: rows), lb = try Tensor<Double>(shape: rows)
        var out = try Tensor<Double>(shape: shape, repeating: 5), lse = try Tensor<Double>(shape: rows, repeating: 5)
        let before = (out, lse)
        func expectError(_ status: PerformerStatus, _ needle: String) {
            do {
                try merged(a, la, b, lb, into: &out, &lse)
                XCTFail("no error, expected \(needle)")
            } catch {
                XCTAssertEqual(error.status, status, error.message)
                XCTAssertTrue(error.message.contains(needle), error.message)
            }
            XCTAssertEqual(out, before.0)
            XCTAssertEqual(lse, before.1)
        }
        la[0, 1, 2, 0] = .nan
        expectError(.invalidArgument, "lse_a[0, 1, 2]")
        la[0, 1, 2, 0] = 0
        lb[0, 0, 1, 0] = .infinity
        expectError(.invalidArgument, "lse_b[0, 0, 1]")
        lb[0, 0, 1, 0] = 0
        let wrong = try Tensor<Double>(shape: SIMD4(1, 2, 4, 1))
        do {
            try merged(a, la, b, wrong, into: &out, &lse)
            XCTFail("no error for lse_b's shape")
        } catch {
            XCTAssertEqual(error.status, .shapeMismatch)
            XCTAssertTrue(error.message.contains("lse_b.shape[2]"), error.message)
        }
        XCTAssertEqual(out, before.0)
    }
}
