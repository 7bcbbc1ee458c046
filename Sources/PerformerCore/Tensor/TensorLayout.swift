/// Shape and stride arithmetic with every overflow checked: the one place that decides whether
/// a (base, shape, strides) triple describes memory a kernel may touch.
public enum TensorLayout {
    /// "[2, 8, 128, 64]"
    public static func describe(_ v: SIMD4<Int>) -> String { "[\(v[0]), \(v[1]), \(v[2]), \(v[3])]" }

    /// "q.shape = [1, 8, 1, 64], k.shape = [1, 8, 4096, 64]": the arguments whose sizes set a
    /// call's scratch, for out-of-memory messages.
    static func describe(_ tensors: KeyValuePairs<String, SIMD4<Int>>) -> String {
        tensors.map { "\($0.key).shape = \(describe($0.value))" }.joined(separator: ", ")
    }

    /// The product of non-negative sizes, nil when it overflows (for sizes that are arguments
    /// of their own, not a tensor's shape, so that a message can name them).
    static func product(_ factors: Int...) -> Int? {
        var result = 1
        for factor in factors {
            let (next, overflow) = result.multipliedReportingOverflow(by: factor)
            if overflow { return nil }
            result = next
        }
        return result
    }

    /// The number of elements in `shape`; throws when a size is negative or the product overflows.
    public static func elementCount(_ shape: SIMD4<Int>, name: String) throws(PerformerError) -> Int {
        var count = 1
        for axis in 0..<4 {
            guard shape[axis] >= 0 else {
                throw PerformerError(.sizeOverflow, "\(name).shape[\(axis)] = \(shape[axis]) is negative")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: shape[axis])
            guard !overflow else {
                throw PerformerError(.sizeOverflow, "\(name).shape \(describe(shape)) has more elements than fit in 64 bits")
            }
            count = product
        }
        return count
    }

    /// The lowest and highest element offsets the view reaches, or nil when it is empty.
    /// Throws when the byte range cannot be represented.
    public static func offsetRange(shape: SIMD4<Int>, strides: SIMD4<Int>, elementSize: Int, name: String)
        throws(PerformerError) -> ClosedRange<Int>? {
        let count = try elementCount(shape, name: name)
        if count == 0 { return nil }
        var low = 0, high = 0
        for axis in 0..<4 where shape[axis] > 1 {
            let (reach, overflow) = (shape[axis] - 1).multipliedReportingOverflow(by: strides[axis])
            guard !overflow else {
                throw PerformerError(.sizeOverflow, "\(name).strides[\(axis)] = \(strides[axis]) overflows with shape[\(axis)] = \(shape[axis])")
            }
            let (sum, sumOverflow) = reach < 0 ? low.addingReportingOverflow(reach) : high.addingReportingOverflow(reach)
            guard !sumOverflow else {
                throw PerformerError(.sizeOverflow, "\(name) spans more memory than fits in 64 bits")
            }
            if reach < 0 { low = sum } else { high = sum }
        }
        // high + 1: the byte just past the last element must be representable too (and
        // high == Int.max must not trap). So must the whole span, high − low + 1 elements:
        // each side may fit while their distance does not (strides of both signs).
        let (_, lowBytesOverflow) = low.multipliedReportingOverflow(by: elementSize)
        let (end, endOverflow) = high.addingReportingOverflow(1)
        let (_, highBytesOverflow) = end.multipliedReportingOverflow(by: elementSize)
        let (span, spanOverflow) = end.subtractingReportingOverflow(low)
        let (_, spanBytesOverflow) = span.multipliedReportingOverflow(by: elementSize)
        guard !lowBytesOverflow, !endOverflow, !highBytesOverflow, !spanOverflow, !spanBytesOverflow else {
            throw PerformerError(.sizeOverflow, "\(name) spans more bytes than fit in 64 bits")
        }
        return low...high
    }

    /// The byte range `[first, last]` a view touches, as addresses, or nil when empty.
    package static func byteRange(base: UnsafeRawPointer, shape: SIMD4<Int>, strides: SIMD4<Int>, elementSize: Int, name: String)
        throws(PerformerError) -> ClosedRange<UInt>? {
        guard let offsets = try offsetRange(shape: shape, strides: strides, elementSize: elementSize, name: name) else {
            return nil
        }
        // Unsigned address arithmetic: a view reaching below address 0 (negative strides) or past
        // the top of the address space must be rejected, not wrapped into a reversed range.
        // offsetRange guarantees lowerBound ≤ 0 ≤ upperBound and that both byte offsets fit.
        let address = UInt(bitPattern: base)
        let first = address.subtractingReportingOverflow(offsets.lowerBound.magnitude * UInt(elementSize))
        let last = address.addingReportingOverflow(UInt((offsets.upperBound + 1) * elementSize - 1))
        guard !first.overflow, !last.overflow, first.partialValue != 0 else {
            throw PerformerError(.sizeOverflow, "\(name) reaches outside the address space")
        }
        return first.partialValue...last.partialValue
    }

    /// Throws unless distinct indices of a writable view map to distinct elements. Conservative:
    /// axes sorted by |stride| must each step past everything the smaller axes reach.
    /// An empty view has no elements to overlap, whatever its strides (NumPy gives empty
    /// arrays zero strides).
    public static func checkNoSelfOverlap(shape: SIMD4<Int>, strides: SIMD4<Int>, name: String) throws(PerformerError) {
        if shape[0] == 0 || shape[1] == 0 || shape[2] == 0 || shape[3] == 0 { return }
        // The axes longer than 1, insertion-sorted in place: no array on a decoder step's path.
        var axes = SIMD4<Int>(repeating: 0), count = 0
        for axis in 0..<4 where shape[axis] > 1 {
            axes[count] = axis
            count += 1
        }
        var i = 1
        while i < count {
            var j = i
            while j > 0, strides[axes[j]].magnitude < strides[axes[j - 1]].magnitude {
                (axes[j], axes[j - 1]) = (axes[j - 1], axes[j])
                j -= 1
            }
            i += 1
        }
        var reach: UInt = 0
        for index in 0..<count {
            let axis = axes[index]
            let step = strides[axis].magnitude
            guard step > reach else {
                throw PerformerError(.aliasing, "\(name).strides \(describe(strides)) make distinct elements of shape \(describe(shape)) overlap")
            }
            reach += step * UInt(shape[axis] - 1)
        }
    }
}

/// A tensor argument reduced to what validation needs: its name, memory span, layout and
/// writability.
struct TensorFootprint {
    var name: String
    var bytes: ClosedRange<UInt>?
    var writable: Bool
    /// The data address, shape and strides: what "the same layout" compares.
    var address: UInt, shape: SIMD4<Int>, strides: SIMD4<Int>

    init<T>(_ view: TensorView<T>, name: String) throws(PerformerError) {
        self.name = name
        self.bytes = try TensorLayout.byteRange(base: UnsafeRawPointer(view.base), shape: view.shape, strides: view.strides, elementSize: MemoryLayout<T>.stride, name: name)
        self.writable = false
        (address, shape, strides) = (UInt(bitPattern: view.base), view.shape, view.strides)
    }

    init<T>(_ view: MutableTensorView<T>, name: String) throws(PerformerError) {
        self.name = name
        self.bytes = try TensorLayout.byteRange(base: UnsafeRawPointer(view.base), shape: view.shape, strides: view.strides, elementSize: MemoryLayout<T>.stride, name: name)
        self.writable = true
        (address, shape, strides) = (UInt(bitPattern: view.base), view.shape, view.strides)
        try TensorLayout.checkNoSelfOverlap(shape: view.shape, strides: view.strides, name: name)
    }

    /// Throws unless every output in `outputs` that overlaps an input in `inputs` has exactly
    /// that input's layout (data pointer, shape, strides). This is the in-place rule for
    /// states: a task reads its own head's input elements before it writes that head's output
    /// elements, which is safe only when each output element is the same input element; any
    /// other overlap (z_N one head after z0) lets one head overwrite another's input unread.
    static func checkInPlace(_ outputs: [TensorFootprint], replacing inputs: [TensorFootprint]) throws(PerformerError) {
        for output in outputs {
            guard let span = output.bytes else { continue }
            for input in inputs {
                guard let other = input.bytes, span.overlaps(other) else { continue }
                if output.address == input.address && output.shape == input.shape && output.strides == input.strides {
                    continue
                }
                throw PerformerError(.aliasing, "output \(output.name) overlaps input \(input.name) but is not the same layout (in place needs the same data pointer, shape and strides)")
            }
        }
    }

    /// Throws when any writable footprint's span overlaps any other footprint's span.
    static func checkOutputsDisjoint(_ footprints: [TensorFootprint]) throws(PerformerError) {
        for (i, output) in footprints.enumerated() where output.writable {
            guard let span = output.bytes else { continue }
            for (j, other) in footprints.enumerated() where j != i {
                guard let otherSpan = other.bytes, span.overlaps(otherSpan) else { continue }
                if other.writable && j < i { continue }  // already reported from the other side
                throw PerformerError(.aliasing, "output \(output.name) overlaps \(other.writable ? "output" : "input") \(other.name)")
            }
        }
    }
}
