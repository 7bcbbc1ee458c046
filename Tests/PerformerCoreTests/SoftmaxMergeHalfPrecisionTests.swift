import PerformerCore
import XCTest

/// SoftmaxAttention.merge of float16 / bfloat16 partial outputs with float32 log-sum-exps
/// (docs/HALF_PRECISION.md): each out element is the float32 merge of the widened rows rounded
/// once to H (checked bit for bit), lse the float32 merge's; a row without keys on either side
/// is 0; a bad lse writes nothing.
final class SoftmaxMergeHalfPrecisionTests: XCTestCase {
    private func check<H: HalfTestScalar>(_: H.Type) throws {
        let shape = SIMD4(2, 3, 5, 7), rows = SIMD4(2, 3, 5, 1)
        var random = LinearTestRandom(seed: 91)
        let a = random.array(210).map { Double(H(rounding: Float($0)).float) }
        let b = random.array(210).map { Double(H(rounding: Float($0)).float) }
        var la = random.array(30).map { Double(Float($0)) }, lb = random.array(30).map { Double(Float($0)) }
        la[4] = -.infinity                       // A saw no key in this row
        la[17] = -.infinity; lb[17] = -.infinity  // neither side did
        let outA = HalfTestTensor<H>(shape: shape, strided: true, values: a), outB = HalfTestTensor<H>(shape: shape, values: b)
        let lseA = LinearTestTensor<Float>(shape: rows, values: la), lseB = LinearTestTensor<Float>(shape: rows, values: lb)
        let out = HalfTestTensor<H>(shape: shape, strided: true), lse = LinearTestTensor<Float>(shape: rows)
        try SoftmaxAttention.merge(outputA: outA.view, logSumExpA: lseA.view, outputB: outB.view, logSumExpB: lseB.view,
                                   output: out.mutableView, logSumExp: lse.mutableView)
        let wideA = LinearTestTensor<Float>(shape: shape, values: a), wideB = LinearTestTensor<Float>(shape: shape, values: b)
        let out32 = LinearTestTensor<Float>(shape: shape), lse32 = LinearTestTensor<Float>(shape: rows)
        try SoftmaxAttention.merge(outputA: wideA.view, logSumExpA: lseA.view, outputB: wideB.view, logSumExpB: lseB.view,
                                   output: out32.mutableView, logSumExp: lse32.mutableView)
        XCTAssertEqual(out.bits, out32.values.map { H(rounding: Float($0)).bits }, "\(H.dtype.name): out")
        XCTAssertEqual(lse.rawValues, lse32.rawValues, "\(H.dtype.name): lse")
        XCTAssertTrue(out.values[(17 * 7)..<(18 * 7)].allSatisfy { $0 == 0 } && lse.rawValues[17] == -.infinity)
        XCTAssertTrue(out.paddingUntouched)
        // In place over A.
        try SoftmaxAttention.merge(outputA: outA.view, logSumExpA: lseA.view, outputB: outB.view, logSumExpB: lseB.view,
                                   output: outA.mutableView, logSumExp: lseA.mutableView)
        XCTAssertEqual(outA.bits, out.bits, "\(H.dtype.name): in place")
        // A NaN lse: nothing written.
        let bad = LinearTestTensor<Float>(shape: rows, values: lb.enumerated().map { $0.offset == 3 ? .nan : $0.element })
        let untouched = HalfTestTensor<H>(shape: shape, values: a)
        XCTAssertThrowsError(try SoftmaxAttention.merge(outputA: outB.view, logSumExpA: lseB.view, outputB: outB.view,
                                                        logSumExpB: bad.view, output: untouched.mutableView,
                                                        logSumExp: lse.mutableView)) {
            XCTAssertEqual(($0 as! PerformerError).status, .invalidArgument)
        }
        XCTAssertEqual(untouched.values, a)
    }

    func testHalfMergeIsTheFloat32MergeRounded() throws {
        try check(Float16.self)
        try check(BFloat16.self)
    }
}
