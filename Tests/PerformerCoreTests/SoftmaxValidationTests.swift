import PerformerCore
import XCTest

/// Bad arguments: every mismatch, negative or overflowing size, overflowing stride, bad option
/// and aliased output is rejected with the right status and a message naming the argument,
/// before anything is written (all outputs start as a sentinel and must keep it; inputs must be
/// unchanged).
final class SoftmaxValidationTests: XCTestCase {
    /// Fixed-address buffers for one call: B=2, H=2, Hk=1, N=5, L=7, D=4, M=3, views starting
    /// `origin` elements in so that modified views stay inside the allocation where possible.
    final class Arena {
        static let capacity = 4096
        static let origin = 1024
        static let sentinel: Float = -777.25
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 5, keys: 7, headDim: 4, valueDim: 3)
        let names = ["q", "k", "v", "dout", "outIn", "lseIn", "out", "lse", "dq", "dk", "dv"]
        var buffers: [String: UnsafeMutablePointer<Float>] = [:]

        init() {
            var rng = SplitMix64(seed: 500)
            for name in names {
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: Self.capacity)
                let isOutput = ["out", "lse", "dq", "dk", "dv"].contains(name)
                for i in 0..<Self.capacity { buffer[i] = isOutput ? Self.sentinel : Float(rng.nextNormal()) }
                buffers[name] = buffer
            }
        }

        deinit { for buffer in buffers.values { buffer.deallocate() } }

        func at(_ name: String) -> UnsafeMutablePointer<Float> { buffers[name]! + Self.origin }

        func snapshot() -> [String: [Float]] {
            buffers.mapValues { Array(UnsafeBufferPointer(start: $0, count: Self.capacity)) }
        }

        func input(_ name: String, _ shape: SIMD4<Int>) -> TensorView<Float> { TensorView(base: at(name), shape: shape) }
        func output(_ name: String, _ shape: SIMD4<Int>) -> MutableTensorView<Float> { MutableTensorView(base: at(name), shape: shape) }
    }

    struct ForwardArguments {
        var q, k, v: TensorView<Float>
        var out: MutableTensorView<Float>
        var lse: MutableTensorView<Float>?
        var options: SoftmaxAttentionOptions

        init(_ a: Arena) {
            let s = a.spec
            q = a.input("q", s.queryShape); k = a.input("k", s.keyShape); v = a.input("v", s.valueShape)
            out = a.output("out", s.outputShape); lse = a.output("lse", s.logSumExpShape)
            options = s.options
        }

        func call() throws {
            try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, logSumExp: lse, options: options)
        }
    }

    struct BackwardArguments {
        var q, k, v, out, lse, dout: TensorView<Float>
        var dq, dk, dv: MutableTensorView<Float>
        var options: SoftmaxAttentionOptions

        init(_ a: Arena) {
            let s = a.spec
            q = a.input("q", s.queryShape); k = a.input("k", s.keyShape); v = a.input("v", s.valueShape)
            out = a.input("outIn", s.outputShape); lse = a.input("lseIn", s.logSumExpShape)
            dout = a.input("dout", s.outputShape)
            dq = a.output("dq", s.queryShape); dk = a.output("dk", s.keyShape); dv = a.output("dv", s.valueShape)
            options = s.options
        }

        func call() throws {
            try SoftmaxAttention.backward(query: q, key: k, value: v, output: out, logSumExp: lse, outputGradient: dout,
                                          queryGradient: dq, keyGradient: dk, valueGradient: dv, options: options)
        }
    }

    private func expectForwardRejected(_ status: PerformerStatus, _ fragment: String, file: StaticString = #filePath,
                                       line: UInt = #line, _ modify: (inout ForwardArguments, Arena) -> Void) {
        let arena = Arena()
        let before = arena.snapshot()
        var arguments = ForwardArguments(arena)
        modify(&arguments, arena)
        assertThrowsPerformerError(status, containing: fragment, "forward", file: file, line: line) { try arguments.call() }
        XCTAssertTrue(arena.snapshot() == before, "forward wrote memory before rejecting (\(fragment))", file: file, line: line)
    }

    private func expectBackwardRejected(_ status: PerformerStatus, _ fragment: String, file: StaticString = #filePath,
                                        line: UInt = #line, _ modify: (inout BackwardArguments, Arena) -> Void) {
        let arena = Arena()
        let before = arena.snapshot()
        var arguments = BackwardArguments(arena)
        modify(&arguments, arena)
        assertThrowsPerformerError(status, containing: fragment, "backward", file: file, line: line) { try arguments.call() }
        XCTAssertTrue(arena.snapshot() == before, "backward wrote memory before rejecting (\(fragment))", file: file, line: line)
    }

    // MARK: controls

    func testUnmodifiedArgumentsAreAcceptedAndWritten() throws {
        // The baseline every rejection below modifies is itself valid.
        let arena = Arena()
        try ForwardArguments(arena).call()
        try BackwardArguments(arena).call()
        let spec = arena.spec
        for (name, count) in [("out", spec.batch * spec.heads * spec.queries * spec.valueDim),
                              ("lse", spec.batch * spec.heads * spec.queries),
                              ("dq", spec.batch * spec.heads * spec.queries * spec.headDim),
                              ("dk", spec.batch * spec.keyHeads * spec.keys * spec.headDim),
                              ("dv", spec.batch * spec.keyHeads * spec.keys * spec.valueDim)] {
            let written = UnsafeBufferPointer(start: arena.at(name), count: count)
            XCTAssertFalse(written.contains(Arena.sentinel), "\(name) not fully written")
            XCTAssertEqual(arena.at(name)[count], Arena.sentinel, "\(name) written past its end")
            XCTAssertEqual(arena.at(name)[-1], Arena.sentinel, "\(name) written before its start")
        }
    }

    func testAdjacentButDisjointOutputsInOneBufferAreAccepted() throws {
        // out and lse back to back in one allocation: touching, not overlapping.
        let arena = Arena()
        var arguments = ForwardArguments(arena)
        let outCount = arena.spec.batch * arena.spec.heads * arena.spec.queries * arena.spec.valueDim
        arguments.lse = MutableTensorView(base: arena.at("out") + outCount, shape: arena.spec.logSumExpShape)
        XCTAssertNoThrow(try arguments.call())
        // One element further back and they overlap.
        expectForwardRejected(.aliasing, "lse") { arguments, arena in
            arguments.lse = MutableTensorView(base: arena.at("out") + outCount - 1, shape: arena.spec.logSumExpShape)
        }
    }

    // MARK: shape mismatches, each naming the argument and axis

    func testForwardShapeMismatchesNameTheArgument() {
        let s = Arena().spec
        expectForwardRejected(.shapeMismatch, "k.shape[0]") { a, _ in a.k.shape[0] = 3 }
        expectForwardRejected(.shapeMismatch, "k.shape[3]") { a, _ in a.k.shape[3] = 5 }
        expectForwardRejected(.shapeMismatch, "v.shape[0]") { a, _ in a.v.shape[0] = 1 }
        expectForwardRejected(.shapeMismatch, "v.shape[1]") { a, _ in a.v.shape[1] = 2 }
        expectForwardRejected(.shapeMismatch, "v.shape[2]") { a, _ in a.v.shape[2] = 6 }
        expectForwardRejected(.shapeMismatch, "q.shape[1]") { a, _ in
            // 2 query heads over 2 key heads is fine; 3 over 2 is not.
            a.k.shape[1] = 2; a.v.shape[1] = 2; a.q.shape[1] = 3
        }
        expectForwardRejected(.shapeMismatch, "k.shape[1]") { a, _ in a.k.shape[1] = 0; a.v.shape[1] = 0 }
        expectForwardRejected(.shapeMismatch, "q.shape[3]") { a, _ in a.q.shape[3] = 0; a.k.shape[3] = 0 }
        for axis in 0..<4 {
            expectForwardRejected(.shapeMismatch, "out.shape[\(axis)]") { a, _ in a.out.shape[axis] += 1 }
        }
        expectForwardRejected(.shapeMismatch, "out.shape[3]") { a, _ in a.out.shape[3] = s.headDim }  // M ≠ D here
        expectForwardRejected(.shapeMismatch, "lse.shape[2]") { a, _ in a.lse!.shape[2] = s.queries - 1 }
        expectForwardRejected(.shapeMismatch, "lse.shape[3]") { a, _ in a.lse!.shape[3] = 2 }
    }

    func testBackwardShapeMismatchesNameTheArgument() {
        expectBackwardRejected(.shapeMismatch, "k.shape[3]") { a, _ in a.k.shape[3] = 3 }
        expectBackwardRejected(.shapeMismatch, "v.shape[2]") { a, _ in a.v.shape[2] = 8 }
        expectBackwardRejected(.shapeMismatch, "out.shape[2]") { a, _ in a.out.shape[2] = 4 }
        expectBackwardRejected(.shapeMismatch, "lse.shape[3]") { a, _ in a.lse.shape[3] = 3 }
        expectBackwardRejected(.shapeMismatch, "lse.shape[1]") { a, _ in a.lse.shape[1] = 1 }
        expectBackwardRejected(.shapeMismatch, "dout.shape[1]") { a, _ in a.dout.shape[1] = 1 }
        expectBackwardRejected(.shapeMismatch, "dout.shape[3]") { a, _ in a.dout.shape[3] = 4 }
        expectBackwardRejected(.shapeMismatch, "dq.shape[3]") { a, _ in a.dq.shape[3] = 3 }
        expectBackwardRejected(.shapeMismatch, "dq.shape[2]") { a, _ in a.dq.shape[2] = 7 }
        expectBackwardRejected(.shapeMismatch, "dk.shape[1]") { a, _ in a.dk.shape[1] = 2 }
        expectBackwardRejected(.shapeMismatch, "dk.shape[2]") { a, _ in a.dk.shape[2] = 5 }
        expectBackwardRejected(.shapeMismatch, "dv.shape[3]") { a, _ in a.dv.shape[3] = 4 }
        expectBackwardRejected(.shapeMismatch, "dv.shape[0]") { a, _ in a.dv.shape[0] = 1 }
    }

    // MARK: sizes and strides

    func testNegativeSizesAreRejected() {
        expectForwardRejected(.sizeOverflow, "q.shape[2]") { a, _ in a.q.shape[2] = -1; a.out.shape[2] = -1; a.lse!.shape[2] = -1 }
        expectForwardRejected(.sizeOverflow, "k.shape[2]") { a, _ in a.k.shape[2] = -3; a.v.shape[2] = -3 }
        expectForwardRejected(.sizeOverflow, "v.shape[3]") { a, _ in a.v.shape[3] = -2; a.out.shape[3] = -2 }
        expectForwardRejected(.sizeOverflow, "q.shape[0]") { a, _ in
            a.q.shape[0] = -1; a.k.shape[0] = -1; a.v.shape[0] = -1; a.out.shape[0] = -1; a.lse!.shape[0] = -1
        }
        expectBackwardRejected(.sizeOverflow, "q.shape[2]") { a, _ in
            a.q.shape[2] = -2; a.out.shape[2] = -2; a.lse.shape[2] = -2; a.dout.shape[2] = -2; a.dq.shape[2] = -2
        }
        // An output with a negative size where the expected size is positive is a mismatch.
        expectForwardRejected(.shapeMismatch, "out.shape[3]") { a, _ in a.out.shape[3] = -3 }
    }

    func testOverflowingSizesAreRejected() {
        let huge = 1 << 40
        expectForwardRejected(.sizeOverflow, "q.shape") { a, _ in a.q.shape = SIMD4(1, 1, huge, huge) }
        expectForwardRejected(.sizeOverflow, "k.shape") { a, _ in a.k.shape = SIMD4(2, 1, huge, huge) }
        expectForwardRejected(.sizeOverflow, "q.shape") { a, _ in
            // Consistent shapes whose element counts overflow.
            a.q.shape = SIMD4(1 << 21, 1 << 21, 1 << 21, 4); a.k.shape = SIMD4(1 << 21, 1, 7, 4)
            a.v.shape = SIMD4(1 << 21, 1, 7, 3)
        }
        expectBackwardRejected(.sizeOverflow, "v.shape") { a, _ in a.v.shape = SIMD4(2, 1, huge, huge) }
    }

    func testOverflowingStridesAreRejected() {
        expectForwardRejected(.sizeOverflow, "q.strides[2]") { a, _ in a.q.strides[2] = 1 << 62 }
        expectForwardRejected(.sizeOverflow, "k") { a, _ in a.k.strides[2] = Int.max }
        expectForwardRejected(.sizeOverflow, "v") { a, _ in a.v.strides[2] = Int.min / 2; a.v.strides[3] = Int.min / 4 }
        expectForwardRejected(.sizeOverflow, "q") { a, _ in a.q.strides = SIMD4(1 << 61, 1 << 61, 1 << 60, 1) }
        expectForwardRejected(.sizeOverflow, "out") { a, _ in a.out.strides[0] = Int.max / 2 }
        expectForwardRejected(.sizeOverflow, "lse") { a, _ in a.lse!.strides[2] = -(1 << 62) }
        // Reaches exactly Int.max elements: the end of the span is not representable.
        expectForwardRejected(.sizeOverflow, "lse") { a, _ in a.lse!.strides = SIMD4(Int.max, 0, 0, 1) }
        expectBackwardRejected(.sizeOverflow, "dq") { a, _ in a.dq.strides[1] = 1 << 62 }
        expectBackwardRejected(.sizeOverflow, "lse") { a, _ in a.lse.strides[2] = Int.max }
    }

    func testViewsReachingOutsideTheAddressSpaceAreRejected() {
        // Negative strides that reach below address 0, or offsets past the top of memory.
        expectForwardRejected(.sizeOverflow, "q") { a, _ in
            a.q = TensorView(base: UnsafePointer(bitPattern: 0x1000)!, shape: a.q.shape, strides: SIMD4(-(1 << 40), 20, 4, 1))
        }
        expectForwardRejected(.sizeOverflow, "k") { a, _ in
            // k spans 224 bytes; only 64 remain above its base.
            a.k = TensorView(base: UnsafePointer(bitPattern: UInt.max - 0x3F)!, shape: a.k.shape)
        }
        expectForwardRejected(.sizeOverflow, "q") { a, _ in a.q.strides[2] = -(1 << 61) }
    }

    // MARK: options

    func testNonFiniteScaleIsRejected() {
        for scale in [Double.nan, .infinity, -.infinity] {
            expectForwardRejected(.invalidArgument, "scale") { a, _ in a.options.scale = scale }
            expectBackwardRejected(.invalidArgument, "scale") { a, _ in a.options.scale = scale }
        }
    }

    func testKeyLengthsOfWrongCountOrOutOfRangeAreRejected() {
        for lengths in [[7], [7, 7, 7], []] {
            expectForwardRejected(.shapeMismatch, "kv_lengths") { a, _ in a.options.keyLengths = lengths }
            expectBackwardRejected(.shapeMismatch, "kv_lengths") { a, _ in a.options.keyLengths = lengths }
        }
        expectForwardRejected(.invalidArgument, "kv_lengths[0]") { a, _ in a.options.keyLengths = [-1, 7] }
        expectForwardRejected(.invalidArgument, "kv_lengths[1]") { a, _ in a.options.keyLengths = [7, 8] }
        expectBackwardRejected(.invalidArgument, "kv_lengths[1]") { a, _ in a.options.keyLengths = [0, Int.max] }
        expectBackwardRejected(.invalidArgument, "kv_lengths[0]") { a, _ in a.options.keyLengths = [Int.min, 3] }
    }

    // MARK: aliasing

    func testForwardOutputsAliasingInputsOrEachOtherAreRejected() {
        expectForwardRejected(.aliasing, "q") { a, arena in
            a.out = MutableTensorView(base: arena.at("q"), shape: a.out.shape)
        }
        expectForwardRejected(.aliasing, "v") { a, arena in
            // Partial overlap: out starts inside v's last row.
            a.out = MutableTensorView(base: arena.at("v") + 2 * 7 * 3 - 1, shape: a.out.shape)
        }
        expectForwardRejected(.aliasing, "k") { a, arena in
            a.lse = MutableTensorView(base: arena.at("k") + 3, shape: a.lse!.shape)
        }
        expectForwardRejected(.aliasing, "lse") { a, arena in
            a.lse = MutableTensorView(base: arena.at("out") + 10, shape: a.lse!.shape)
        }
        expectForwardRejected(.aliasing, "out") { a, arena in
            // A reversed out whose span covers lse placed in front of its base.
            a.out = MutableTensorView(base: arena.at("out") + 100, shape: a.out.shape, strides: SIMD4(-30, -15, -3, -1))
            a.lse = MutableTensorView(base: arena.at("out") + 40, shape: a.lse!.shape)
        }
    }

    func testOutputsOverlappingThemselvesAreRejected() {
        expectForwardRejected(.aliasing, "out") { a, _ in a.out.strides = SIMD4(0, 15, 3, 1) }
        expectForwardRejected(.aliasing, "out") { a, _ in a.out.strides = SIMD4(30, 15, 2, 1) }  // rows overlap
        expectForwardRejected(.aliasing, "out") { a, _ in a.out.strides = SIMD4(30, 15, 3, 0) }
        expectForwardRejected(.aliasing, "lse") { a, _ in a.lse!.strides = SIMD4(10, 5, 0, 1) }
        expectBackwardRejected(.aliasing, "dk") { a, _ in a.dk.strides = SIMD4(28, 28, 0, 1) }
        expectBackwardRejected(.aliasing, "dq") { a, _ in a.dq.strides = SIMD4(40, 20, 3, -1) }  // rows share an element
        expectBackwardRejected(.aliasing, "dv") { a, _ in a.dv.strides = SIMD4(21, 21, 3, 3) }
    }

    func testBackwardGradientsAliasingInputsOrEachOtherAreRejected() {
        expectBackwardRejected(.aliasing, "dk") { a, arena in
            a.dk = MutableTensorView(base: arena.at("dq") + 3, shape: a.dk.shape)
        }
        expectBackwardRejected(.aliasing, "q") { a, arena in
            a.dq = MutableTensorView(base: arena.at("q"), shape: a.dq.shape)
        }
        expectBackwardRejected(.aliasing, "dout") { a, arena in
            a.dv = MutableTensorView(base: arena.at("dout") + 5, shape: a.dv.shape)
        }
        expectBackwardRejected(.aliasing, "lse") { a, arena in
            a.dq = MutableTensorView(base: arena.at("lseIn") - 10, shape: a.dq.shape)
        }
        expectBackwardRejected(.aliasing, "out") { a, arena in
            a.dk = MutableTensorView(base: arena.at("outIn") + 59, shape: a.dk.shape)
        }
        expectBackwardRejected(.aliasing, "dv") { a, arena in
            // dq runs backwards from 5 elements into dv.
            a.dq = MutableTensorView(base: arena.at("dv") + 5, shape: a.dq.shape, strides: SIMD4(-40, -20, -4, -1))
        }
    }

    // MARK: owning tensors

    func testTensorRejectsNegativeSizesAndWrongElementCounts() {
        assertThrowsPerformerError(.sizeOverflow, containing: "shape[1]") { _ = try Tensor<Float>(shape: SIMD4(1, -2, 3, 4)) }
        assertThrowsPerformerError(.sizeOverflow, containing: "shape") { _ = try Tensor<Double>(shape: SIMD4(1 << 40, 1 << 40, 1, 1)) }
        assertThrowsPerformerError(.shapeMismatch, containing: "5") { _ = try Tensor<Float>(shape: SIMD4(1, 1, 2, 3), elements: [1, 2, 3, 4, 5]) }
    }
}
