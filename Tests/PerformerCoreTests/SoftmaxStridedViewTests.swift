import PerformerCore
import XCTest

/// Non-contiguous inputs and outputs: permuted, column-major, reversed (negative strides),
/// gapped, broadcast (zero strides), views into one packed buffer. Results must match the
/// reference on the values the views describe, and nothing outside an output view may change.
final class SoftmaxStridedViewTests: XCTestCase {
    private func checkAllISAs(_ spec: SoftmaxCase, seed: UInt64, layouts: SoftmaxLayouts,
                              file: StaticString = #filePath, line: UInt = #line) {
        let inputs = SoftmaxInputs.random(spec, seed: seed)
        forEachSupportedISA { _ in
            SoftmaxHarness.check(spec, as: Float.self, seed: seed, tolerance: 1e-5, layouts: layouts, inputs: inputs,
                                 file: file, line: line)
            SoftmaxHarness.check(spec, as: Double.self, seed: seed, tolerance: 1e-12, layouts: layouts, inputs: inputs,
                                 file: file, line: line)
        }
    }

    private let gqa = SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 37, keys: 70, headDim: 16, valueDim: 12,
                                  causal: true, keyLengths: [70, 41])

    func testSequenceMajorInputs() {
        // B × N × H × D buffers seen as B × H × N × D through permuted strides.
        var layouts = SoftmaxLayouts()
        layouts.q = .sequenceMajor; layouts.k = .sequenceMajor; layouts.v = .sequenceMajor; layouts.dout = .sequenceMajor
        checkAllISAs(gqa, seed: 100, layouts: layouts)
    }

    func testColumnMajorInputs() {
        var layouts = SoftmaxLayouts()
        layouts.q = .columnMajor; layouts.k = .columnMajor; layouts.v = .columnMajor; layouts.dout = .columnMajor
        checkAllISAs(gqa, seed: 101, layouts: layouts)
    }

    func testNegativeStrideInputs() {
        var layouts = SoftmaxLayouts()
        layouts.q = .reversedWithGaps; layouts.k = .allReversed
        layouts.v = Layout(order: [3, 0, 1, 2], reversed: [3], gap: 2); layouts.dout = .allReversed
        checkAllISAs(gqa, seed: 102, layouts: layouts)
    }

    func testZeroStrideBroadcastInputs() {
        // Keys shared across the batch, every query row identical, and the output gradient
        // a single number broadcast everywhere (the gradient of sum(out)).
        var layouts = SoftmaxLayouts()
        layouts.k = Layout(broadcast: [0])
        layouts.v = Layout(order: [0, 1, 3, 2], broadcast: [0])
        layouts.q = Layout(broadcast: [2])
        layouts.dout = Layout(broadcast: [0, 1, 2, 3])
        checkAllISAs(gqa, seed: 103, layouts: layouts)
        // Every component of each key equal (zero stride along D).
        var columns = SoftmaxLayouts()
        columns.k = Layout(broadcast: [3])
        columns.v = Layout(broadcast: [1])
        checkAllISAs(gqa, seed: 104, layouts: columns)
    }

    func testOutputsWrittenThroughStridedViews() {
        // The harness checks gaps and guard elements around every output keep their sentinel.
        var layouts = SoftmaxLayouts()
        layouts.out = Layout(order: [0, 2, 1, 3], gap: 1)
        layouts.lse = Layout(order: [0, 1, 2, 3], reversed: [1, 2], gap: 3)
        layouts.dq = .sequenceMajor
        layouts.dk = Layout(order: [3, 2, 1, 0], reversed: [2], gap: 1)
        layouts.dv = .reversedWithGaps
        checkAllISAs(gqa, seed: 105, layouts: layouts)
    }

    func testEverythingStridedAtTileBoundarySizes() {
        var layouts = SoftmaxLayouts()
        layouts.q = .allReversed; layouts.k = .sequenceMajor; layouts.v = .columnMajor; layouts.dout = .reversedWithGaps
        layouts.out = .columnMajor; layouts.lse = Layout(reversed: [2], gap: 1)
        layouts.dq = .reversedWithGaps; layouts.dk = .columnMajor; layouts.dv = .allReversed
        checkAllISAs(SoftmaxCase(batch: 1, heads: 2, keyHeads: 2, queries: 97, keys: 129, headDim: 33, valueDim: 17,
                                 causal: true), seed: 106, layouts: layouts)
    }

    /// q, k and v as slices of one packed B × N × 3 × H × D buffer (a fused QKV projection), so
    /// the three inputs share one allocation; outputs elsewhere.
    func testQueryKeyValueSlicesOfOnePackedBuffer() throws {
        let (b, h, n, d) = (2, 3, 45, 16)
        let spec = SoftmaxCase(batch: b, heads: h, keyHeads: h, queries: n, keys: n, headDim: d, valueDim: d, causal: true)
        var rng = SplitMix64(seed: 107)
        let packed = (0..<(b * n * 3 * h * d)).map { _ in rng.nextNormal() }
        let strides = SIMD4(n * 3 * h * d, d, 3 * h * d, 1)
        func unpack(_ part: Int) -> DenseTensor {
            var tensor = DenseTensor(shape: spec.queryShape)
            for i0 in 0..<b { for i1 in 0..<h { for i2 in 0..<n { for i3 in 0..<d {
                tensor[i0, i1, i2, i3] = packed[i0 * strides[0] + (part * h + i1) * strides[1] + i2 * strides[2] + i3]
            } } } }
            return tensor
        }
        let dout = DenseTensor.random(spec.outputShape, &rng)
        let expected = SoftmaxReference.evaluate(q: unpack(0), k: unpack(1), v: unpack(2), dout: dout, options: spec.options)
        let storage = packed
        try forEachSupportedISA { isa in
            var out = try Tensor<Double>(shape: spec.outputShape), lse = try Tensor<Double>(shape: spec.logSumExpShape)
            var dq = try Tensor<Double>(shape: spec.queryShape), dk = try Tensor<Double>(shape: spec.keyShape)
            var dv = try Tensor<Double>(shape: spec.valueShape)
            let doutTensor = dout.tensor(Double.self)
            try storage.withUnsafeBufferPointer { buffer in
                let base = buffer.baseAddress!
                let q = TensorView(base: base, shape: spec.queryShape, strides: strides)
                let k = TensorView(base: base + h * d, shape: spec.keyShape, strides: strides)
                let v = TensorView(base: base + 2 * h * d, shape: spec.valueShape, strides: strides)
                try out.withMutableView { out in try lse.withMutableView { lse in
                    try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, logSumExp: lse, options: spec.options)
                } }
                try out.withView { out in try lse.withView { lse in try doutTensor.withView { dout in
                    try dq.withMutableView { dq in try dk.withMutableView { dk in try dv.withMutableView { dv in
                        try SoftmaxAttention.backward(query: q, key: k, value: v, output: out, logSumExp: lse,
                                                      outputGradient: dout, queryGradient: dq, keyGradient: dk,
                                                      valueGradient: dv, options: spec.options)
                    } } }
                } } }
            }
            for (name, actual, wanted) in [("out", out, expected.out), ("lse", lse, expected.lse), ("dq", dq, expected.dq),
                                           ("dk", dk, expected.dk), ("dv", dv, expected.dv)] {
                XCTAssertLessThanOrEqual(relativeError(DenseTensor(actual), wanted), 1e-12, "\(name) isa=\(isa)")
            }
        }
    }

    func testSelfAttentionWithQueryKeyAndValueTheSameView() throws {
        // Inputs may alias each other freely; only outputs must be disjoint.
        let spec = SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 40, keys: 40, headDim: 12, valueDim: 12, causal: true)
        var rng = SplitMix64(seed: 108)
        let x = DenseTensor.random(spec.queryShape, &rng)
        let dout = DenseTensor.random(spec.outputShape, &rng)
        let expected = SoftmaxReference.evaluate(q: x, k: x, v: x, dout: dout, options: spec.options)
        let xTensor = x.tensor(Double.self), doutTensor = dout.tensor(Double.self)
        var out = try Tensor<Double>(shape: spec.outputShape), lse = try Tensor<Double>(shape: spec.logSumExpShape)
        var dq = try Tensor<Double>(shape: spec.queryShape), dk = try Tensor<Double>(shape: spec.keyShape)
        var dv = try Tensor<Double>(shape: spec.valueShape)
        try xTensor.withView { x in
            try out.withMutableView { out in try lse.withMutableView { lse in
                try SoftmaxAttention.forward(query: x, key: x, value: x, output: out, logSumExp: lse, options: spec.options)
            } }
            try out.withView { out in try lse.withView { lse in try doutTensor.withView { dout in
                try dq.withMutableView { dq in try dk.withMutableView { dk in try dv.withMutableView { dv in
                    try SoftmaxAttention.backward(query: x, key: x, value: x, output: out, logSumExp: lse, outputGradient: dout,
                                                  queryGradient: dq, keyGradient: dk, valueGradient: dv, options: spec.options)
                } } }
            } } }
        }
        for (name, actual, wanted) in [("out", out, expected.out), ("lse", lse, expected.lse), ("dq", dq, expected.dq),
                                       ("dk", dk, expected.dk), ("dv", dv, expected.dv)] {
            XCTAssertLessThanOrEqual(relativeError(DenseTensor(actual), wanted), 1e-12, name)
        }
    }
}
