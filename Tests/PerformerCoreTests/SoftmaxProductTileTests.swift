import XCTest
import PerformerCore

/// The micro-kernel product every softmax pass runs (KernelBenchmark.product), on the heights
/// that end in short tiles (rows % R ≠ 0: 32 = 6·4 + 4·2 at R = 6, 1…4 leftover rows, a
/// remainder of 5 in a partial full tile, R + 2 as two short tiles) under every ISA: each
/// element of C must be the chain of FMAs over the depth in order (the bits every tile height
/// must give, so that a head dim never changes the rounding), and nothing past the last row
/// or column may be written.
final class SoftmaxProductTileTests: XCTestCase {
    func testEveryHeightGivesTheFusedChainBitsAndWritesNoGuardRow() throws {
        defer { try? Runtime.selectKernels(Runtime.supportedISAs.last!) }
        var random = SplitMix64(seed: 9)
        for isa in Runtime.supportedISAs {
            try Runtime.selectKernels(isa)
            for rows in 0...26 {
                for depth in [1, 7, 32] {
                    for transposedA in [false, true] {
                        try check(rows: rows, columns: 64, depth: depth, transposedA: transposedA,
                                  random: &random, isa: isa)
                    }
                }
            }
        }
    }

    private func check(rows: Int, columns: Int, depth: Int, transposedA: Bool, random: inout SplitMix64,
                       isa: KernelISA) throws {
        // A rows × depth read through strides with padding (row-major, or transposed as V is read).
        let (aRowStride, aDepthStride) = transposedA ? (1, rows + 3) : (depth + 5, 1)
        let aCount = transposedA ? (depth * (rows + 3)) : (rows * (depth + 5))
        let a = (0..<max(aCount, 1)).map { _ in Float(random.nextUniform() * 2 - 1) }
        let bRowStride = columns + 32
        let b = (0..<(depth * bRowStride)).map { _ in Float(random.nextUniform() * 2 - 1) }
        let cRowStride = columns + 16, guardRows = 2
        let sentinel = Float(bitPattern: 0x7FC0_1234)
        var c = [Float](repeating: sentinel, count: (rows + guardRows) * cRowStride)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    KernelBenchmark.product(rows: rows, columns: columns, depth: depth, a: ap.baseAddress!,
                                            aStrides: (aRowStride, aDepthStride), b: bp.baseAddress!,
                                            bRowStride: bRowStride, c: cp.baseAddress!, cRowStride: cRowStride)
                }
            }
        }
        let what = "\(isa) rows=\(rows) depth=\(depth) transposedA=\(transposedA)"
        for r in 0..<(rows + guardRows) {
            for x in 0..<cRowStride {
                let got = c[r * cRowStride + x]
                guard r < rows && x < columns else {
                    XCTAssertEqual(got.bitPattern, sentinel.bitPattern, "\(what): C[\(r)][\(x)] written outside the product")
                    continue
                }
                var chain: Float = 0
                for k in 0..<depth {
                    chain = chain.addingProduct(a[r * aRowStride + k * aDepthStride], b[k * bRowStride + x])
                }
                if isa == .portable {
                    // The portable build multiplies and adds apart (no FMA instruction): float64 decides.
                    var exact = 0.0
                    for k in 0..<depth { exact += Double(a[r * aRowStride + k * aDepthStride]) * Double(b[k * bRowStride + x]) }
                    XCTAssertEqual(Double(got), exact, accuracy: 1e-5 * Double(depth), "\(what): C[\(r)][\(x)]")
                } else {
                    XCTAssertEqual(got.bitPattern, chain.bitPattern, "\(what): C[\(r)][\(x)] = \(got), FMA chain \(chain)")
                }
                if got.bitPattern != chain.bitPattern && isa != .portable { return }  // one failure per case
            }
        }
    }
}
