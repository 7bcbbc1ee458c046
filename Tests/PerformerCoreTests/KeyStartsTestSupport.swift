import XCTest

// Helpers of the kv_starts tests of linear and FAVOR+ attention, whose inputs and results are
// logical row-major float64 arrays of rank-4 shapes.

/// Batch row `b` (every head) of `values` (shape `shape`), rows `rows` of axis 2.
func sliceRows(_ values: [Double], _ shape: SIMD4<Int>, batch b: Int, rows: Range<Int>) -> [Double] {
    var result: [Double] = []
    for h in 0..<shape[1] { for r in rows { for c in 0..<shape[3] {
        result.append(values[((b * shape[1] + h) * shape[2] + r) * shape[3] + c])
    } } }
    return result
}

/// The rows of `values` (shape `shape`) outside batch row b's key window, as (b, row) pairs.
func paddedRows(_ shape: SIMD4<Int>, starts: [Int], lengths: [Int]?) -> [(b: Int, row: Int)] {
    var rows: [(Int, Int)] = []
    for b in 0..<shape[0] {
        let window = starts[b]..<(lengths?[b] ?? shape[2])
        for j in 0..<shape[2] where !window.contains(j) { rows.append((b, j)) }
    }
    return rows
}

/// Overwrites the padded key rows of `values` (shape `shape`) with large random numbers.
func scramblePaddedRows(_ values: inout [Double], _ shape: SIMD4<Int>, starts: [Int], lengths: [Int]?, seed: UInt64) {
    var random = LinearTestRandom(seed: seed)
    for (b, j) in paddedRows(shape, starts: starts, lengths: lengths) {
        for h in 0..<shape[1] { for c in 0..<shape[3] {
            values[((b * shape[1] + h) * shape[2] + j) * shape[3] + c] = 10 * random.normal()
        } }
    }
}

/// Asserts that the padded key rows of the gradient `values` (shape `shape`) are exactly 0.
func assertPaddedRowsZero(_ values: [Double], _ shape: SIMD4<Int>, starts: [Int], lengths: [Int]?, _ label: String,
                          file: StaticString = #filePath, line: UInt = #line) {
    for (b, j) in paddedRows(shape, starts: starts, lengths: lengths) {
        for h in 0..<shape[1] { for c in 0..<shape[3] {
            let value = values[((b * shape[1] + h) * shape[2] + j) * shape[3] + c]
            XCTAssertEqual(value, 0, "\(label)[\(b), \(h), \(j), \(c)]", file: file, line: line)
        } }
    }
}

/// Bitwise equality of two arrays, naming the first difference.
func assertSameBits(_ a: [Double], _ b: [Double], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, label, file: file, line: line)
    if let i = a.indices.first(where: { i in i < b.count && a[i].bitPattern != b[i].bitPattern }) {
        XCTFail("\(label): entry \(i) differs: \(a[i]) vs \(b[i])", file: file, line: line)
    }
}

/// `value` in every entry of a tensor of shape `shape`, as a logical array.
func filled(_ shape: SIMD4<Int>, _ value: Double) -> [Double] {
    [Double](repeating: value, count: shape[0] * shape[1] * shape[2] * shape[3])
}
