/// The sizes every attention call shares, checked in one place: q B×H×N×D, k B×Hk×L×D,
/// v B×Hk×L×M with Hk ≥ 1 dividing H (grouped-query attention) and D ≥ 1. Softmax, linear and
/// FAVOR+ attention build their problems on it, so their shape errors read the same.
struct AttentionDimensions {
    var batch: Int, heads: Int, keyHeads: Int
    var queryCount: Int, keyCount: Int, headDim: Int, valueDim: Int

    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>) throws(PerformerError) {
        for (name, view) in [("q", q), ("k", k), ("v", v)] {
            _ = try TensorLayout.elementCount(view.shape, name: name)
        }
        let (b, h, n, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (hk, l, m) = (k.shape[1], k.shape[2], v.shape[3])
        try ShapeCheck.expect(k.shape[0] == b, "k.shape[0] = \(k.shape[0]) but q.shape[0] = \(b) (batch)")
        try ShapeCheck.expect(k.shape[3] == d, "k.shape[3] = \(k.shape[3]) but q.shape[3] = \(d) (head dim)")
        try ShapeCheck.expect(v.shape[0] == b, "v.shape[0] = \(v.shape[0]) but q.shape[0] = \(b) (batch)")
        try ShapeCheck.expect(v.shape[1] == hk, "v.shape[1] = \(v.shape[1]) but k.shape[1] = \(hk) (key heads)")
        try ShapeCheck.expect(v.shape[2] == l, "v.shape[2] = \(v.shape[2]) but k.shape[2] = \(l) (keys)")
        try ShapeCheck.expect(hk >= 1, "k.shape[1] = \(hk): need at least one key head")
        try ShapeCheck.expect(h % hk == 0, "q.shape[1] = \(h) heads is not a multiple of k.shape[1] = \(hk) key heads")
        try ShapeCheck.expect(d >= 1, "q.shape[3] = \(d): head dim must be at least 1")
        (batch, heads, keyHeads) = (b, h, hk)
        (queryCount, keyCount, headDim, valueDim) = (n, l, d, m)
    }

    /// Throws unless `lengths` and `starts` (each when given) are valid key ranges of this
    /// problem (`checkKeyRanges(lengths:starts:batch:keyCount:)`).
    func checkKeyRanges(lengths: [Int]?, starts: [Int]?) throws(PerformerError) {
        try Self.checkKeyRanges(lengths: lengths, starts: starts, batch: batch, keyCount: keyCount)
    }

    /// Throws unless `lengths` (when given) has one entry per batch, each in 0 ... L, and
    /// `starts` (when given) one entry per batch, each in 0 ... L and at most its row's length
    /// (an empty key range is allowed). Lengths are checked first.
    static func checkKeyRanges(lengths: [Int]?, starts: [Int]?, batch: Int, keyCount: Int) throws(PerformerError) {
        if let lengths {
            try ShapeCheck.expect(lengths.count == batch, "kv_lengths has \(lengths.count) entries but batch = \(batch)")
            for (index, length) in lengths.enumerated() where !(0...keyCount).contains(length) {
                throw PerformerError(.invalidArgument, "kv_lengths[\(index)] = \(length) is not in 0...\(keyCount)")
            }
        }
        guard let starts else { return }
        try ShapeCheck.expect(starts.count == batch, "kv_starts has \(starts.count) entries but batch = \(batch)")
        for (index, start) in starts.enumerated() {
            guard (0...keyCount).contains(start) else {
                throw PerformerError(.invalidArgument, "kv_starts[\(index)] = \(start) is not in 0...\(keyCount)")
            }
            if let lengths, start > lengths[index] {
                throw PerformerError(.invalidArgument,
                                     "kv_starts[\(index)] = \(start) is past kv_lengths[\(index)] = \(lengths[index])")
            }
        }
    }
}

/// Shape assertions with messages that name the argument.
enum ShapeCheck {
    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws(PerformerError) {
        if !condition { throw PerformerError(.shapeMismatch, message()) }
    }

    /// Throws unless `view` has exactly `expected` shape.
    static func expectShape<T>(_ view: TensorView<T>, _ expected: SIMD4<Int>, name: String, meaning: String)
        throws(PerformerError) {
        for axis in 0..<4 where view.shape[axis] != expected[axis] {
            throw PerformerError(.shapeMismatch, "\(name).shape[\(axis)] = \(view.shape[axis]) but expected \(expected[axis]) (\(name) is \(meaning) = \(TensorLayout.describe(expected)))")
        }
    }

    /// Throws unless axes 0-2 of `other` equal those of `reference` (two tensors of the same
    /// rows): "v.shape[2] = 6 but k.shape[2] = 5 (keys)", each axis named by `meanings`.
    static func expectLeadingAxes(_ other: SIMD4<Int>, name otherName: String, equal reference: SIMD4<Int>,
                                  name referenceName: String, meanings: [String]) throws(PerformerError) {
        for axis in 0..<3 where other[axis] != reference[axis] {
            throw PerformerError(.shapeMismatch, "\(otherName).shape[\(axis)] = \(other[axis]) but \(referenceName).shape[\(axis)] = \(reference[axis]) (\(meanings[axis]))")
        }
    }
}
