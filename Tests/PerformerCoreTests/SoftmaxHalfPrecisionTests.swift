import Foundation
import PerformerCore
import XCTest

/// Softmax attention on float16 and bfloat16 storage (docs/HALF_PRECISION.md), on every kernel
/// build the CPU runs. The accuracy rule is FlashAttention's: against the float64 reference on
/// the same (half) inputs, our output and every gradient has a max error at most twice that of
/// a straightforward half implementation with float32 sums (`HalfSoftmaxBaseline`), plus the
/// relative (L2) bounds stated here: 1e-2 for bfloat16 (8-bit mantissa, unit roundoff 2^-8),
/// 2e-3 for float16 (2^-11).
final class SoftmaxHalfPrecisionTests: XCTestCase {
    static func relativeBound<H: HalfTestScalar>(_: H.Type) -> Double { H.dtype == .bfloat16 ? 1e-2 : 2e-3 }

    /// Runs `spec` in H on every ISA and checks out, lse, dq, dk, dv against the rule.
    private func checkAccuracy<H: HalfTestScalar>(
        _ spec: SoftmaxCase, as type: H.Type, seed: UInt64, inputScale: Double = 1, layouts: SoftmaxLayouts = SoftmaxLayouts(),
        gradients: Bool = true, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        var inputs = SoftmaxInputs.random(spec, seed: seed)
        for keyPath in [\SoftmaxInputs.q, \SoftmaxInputs.k] {
            inputs[keyPath: keyPath].values = inputs[keyPath: keyPath].values.map { $0 * inputScale }
        }
        // The reference sees exactly the half inputs, as the layouts store them (a broadcast
        // axis holds its last position's values).
        let exact = SoftmaxInputs(q: HalfBuffer<H>.holding(inputs.q, layout: layouts.q).load(),
                                  k: HalfBuffer<H>.holding(inputs.k, layout: layouts.k).load(),
                                  v: HalfBuffer<H>.holding(inputs.v, layout: layouts.v).load(),
                                  dout: HalfBuffer<H>.holding(inputs.dout, layout: layouts.dout).load())
        let reference = exact.reference(spec)
        let baseline = HalfSoftmaxBaseline.evaluate(spec, exact, as: H.self)
        try forEachSupportedISA { isa in
            let run = try HalfSoftmaxRun(spec, exact, as: H.self, layouts: layouts)
            let label = "\(H.dtype.name) \(isa) \(spec)"
            XCTAssertTrue(run.wroteOnlyInsideViews, "\(label): wrote outside an output view", file: file, line: line)
            let results = [("out", run.out.load(), reference.out, baseline.out), ("lse", run.lse.load(), reference.lse, baseline.lse),
                           ("dq", run.dq.load(), reference.dq, baseline.dq), ("dk", run.dk.load(), reference.dk, baseline.dk),
                           ("dv", run.dv.load(), reference.dv, baseline.dv)]
            for (name, ours, expected, straightforward) in results.prefix(gradients ? 5 : 2) {
                let ourError = maxAbsoluteError(ours, expected), baselineError = maxAbsoluteError(straightforward, expected)
                // The half rounding of one element is the floor of both errors; 1e-6 keeps an
                // exactly representable result (both errors 0) from failing on float32 noise.
                XCTAssertLessThanOrEqual(ourError, 2 * baselineError + 1e-6,
                                         "\(label) \(name): max error \(ourError), straightforward half \(baselineError)",
                                         file: file, line: line)
                let relative = relativeError(ours, expected)
                XCTAssertLessThanOrEqual(relative, Self.relativeBound(H.self), "\(label) \(name): relative error \(relative)",
                                         file: file, line: line)
            }
        }
    }

    private func checkBoth(_ spec: SoftmaxCase, seed: UInt64, inputScale: Double = 1, layouts: SoftmaxLayouts = SoftmaxLayouts(),
                           file: StaticString = #filePath, line: UInt = #line) throws {
        try checkAccuracy(spec, as: Float16.self, seed: seed, inputScale: inputScale, layouts: layouts, file: file, line: line)
        try checkAccuracy(spec, as: BFloat16.self, seed: seed, inputScale: inputScale, layouts: layouts, file: file, line: line)
    }

    // MARK: the accuracy rule

    func testNotCausal() throws {
        try checkBoth(SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 70, keys: 45, headDim: 16, valueDim: 24), seed: 1)
    }

    func testCausalGroupedQueryHeads() throws {
        try checkBoth(SoftmaxCase(batch: 1, heads: 4, keyHeads: 2, queries: 80, keys: 80, headDim: 32, valueDim: 16,
                                  causal: true), seed: 2)
    }

    func testKeyLengthsAndStarts() throws {
        try checkBoth(SoftmaxCase(batch: 3, heads: 2, keyHeads: 1, queries: 33, keys: 50, headDim: 8, valueDim: 8,
                                  causal: true, keyLengths: [50, 31, 7], keyStarts: [0, 12, 7]), seed: 3)
    }

    func testFewQueriesDecodingPath() throws {
        try checkBoth(SoftmaxCase(batch: 1, heads: 4, keyHeads: 2, queries: 3, keys: 300, headDim: 64, valueDim: 64,
                                  causal: true), seed: 4)
    }

    func testStridedPermutedReversedAndBroadcastLayouts() throws {
        var layouts = SoftmaxLayouts()
        layouts.q = .sequenceMajor
        layouts.k = .allReversed
        layouts.v = Layout(order: [0, 1, 2, 3], broadcast: [1])  // zero stride over key heads
        layouts.out = .reversedWithGaps
        layouts.dout = .columnMajor
        layouts.dq = .reversedWithGaps
        layouts.dk = .sequenceMajor
        layouts.dv = .columnMajor
        layouts.lse = .reversedWithGaps
        try checkBoth(SoftmaxCase(batch: 2, heads: 2, keyHeads: 2, queries: 19, keys: 23, headDim: 12, valueDim: 9), seed: 5,
                      layouts: layouts)
    }

    /// |q·k| far past float16's largest value (65504): scores are float32, so nothing overflows.
    /// (The gradients are checked for finiteness only: P is one-hot up to float32 score
    /// rounding, ~0.01 at |s| ~ 10⁵, so dq and dk are ~0 and any float32 evaluation is noise.)
    func testLargeScoresInFloat16StayFinite() throws {
        let spec = SoftmaxCase(batch: 1, heads: 1, queries: 20, keys: 20, headDim: 64, valueDim: 16, scale: 1)
        try checkAccuracy(spec, as: Float16.self, seed: 6, inputScale: 60, gradients: false)
        var inputs = SoftmaxInputs.random(spec, seed: 6)
        inputs.q.values = inputs.q.values.map { $0 * 60 }
        inputs.k.values = inputs.k.values.map { $0 * 60 }
        let run = try HalfSoftmaxRun(spec, inputs, as: Float16.self)
        let lse = run.lse.load().values
        XCTAssertTrue(lse.allSatisfy(\.isFinite), "lse \(lse.prefix(4))")
        XCTAssertGreaterThan(lse.map(abs).max()!, 65504, "the test must produce scores past float16's range")
        for result in [run.out, run.dq, run.dk, run.dv] { XCTAssertTrue(result.load().values.allSatisfy(\.isFinite)) }
    }

    // MARK: rounding and special values

    /// With q = 0 and two visible keys, out = (v₁ + v₂) / 2 exactly in float32: rounding it
    /// exercises ties (adjacent half values) in both the vector and the element-wise paths.
    private func checkRoundsOnceToNearestEven<H: HalfTestScalar>(_: H.Type, values: [Float]) throws {
        let m = values.count / 2
        let spec = SoftmaxCase(batch: 1, heads: 1, queries: 1, keys: 2, headDim: 4, valueDim: m)
        var inputs = SoftmaxInputs.random(spec, seed: 7)
        inputs.q = DenseTensor(shape: spec.queryShape)
        inputs.v = DenseTensor(shape: spec.valueShape, values: values.map { Double(H(rounding: $0).float) })
        try forEachSupportedISA { isa in
            let run = try HalfSoftmaxRun(spec, inputs, as: H.self)
            let v = inputs.v.values.map { Float($0) }
            let expected = (0..<m).map { H(rounding: (v[$0] + v[m + $0]) / 2).bits }
            XCTAssertEqual(run.out.viewBits, expected, "\(H.dtype.name) \(isa)")
        }
    }

    func testOutputRoundsOnceToNearestEven() throws {
        var rng = SplitMix64(seed: 8)
        // Neighbours (ties), equal values, and random values; 37 columns: vectors and a tail.
        var first: [Float] = [], second: [Float] = []
        for index in 0..<37 {
            let x = Float(rng.nextNormal())
            first.append(x)
            second.append(index % 3 == 0 ? x : Float(rng.nextNormal()))
        }
        let f16Neighbours = first.map { Float(Float16($0).nextUp) }, bf16Neighbours = first.map { value in
            Float(BFloat16(bitPattern: BFloat16(value).bitPattern &+ 1))
        }
        try checkRoundsOnceToNearestEven(Float16.self, values: first + zip(second, f16Neighbours).enumerated().map { $0.offset % 2 == 0 ? $0.element.1 : $0.element.0 })
        try checkRoundsOnceToNearestEven(BFloat16.self, values: first + zip(second, bf16Neighbours).enumerated().map { $0.offset % 2 == 0 ? $0.element.1 : $0.element.0 })
    }

    /// One visible key: out = v bit for bit, whatever v holds (denormals, infinities, NaN).
    private func checkSpecialValuesPassThrough<H: HalfTestScalar>(_: H.Type, bits: [UInt16]) throws {
        let spec = SoftmaxCase(batch: 1, heads: 1, queries: 20, keys: 1, headDim: 4, valueDim: bits.count)
        var inputs = SoftmaxInputs.random(spec, seed: 9)
        inputs.v.values = bits.map { Double(halfValue(H.self, $0)) }
        try forEachSupportedISA { isa in
            let run = try HalfSoftmaxRun(spec, inputs, as: H.self)
            let out = run.out.viewBits
            for row in 0..<spec.queries {
                for (c, expected) in bits.enumerated() {
                    let got = out[row * bits.count + c]
                    if halfValue(H.self, expected).isNaN {
                        XCTAssertTrue(halfValue(H.self, got).isNaN, "\(H.dtype.name) \(isa) column \(c): 0x\(String(got, radix: 16))")
                    } else if expected == 0x8000 {
                        // −0: out is a sum (started at +0), so either zero is right.
                        XCTAssertTrue(got == 0 || got == 0x8000, "\(H.dtype.name) \(isa) column \(c)")
                    } else {
                        XCTAssertEqual(got, expected, "\(H.dtype.name) \(isa) column \(c)")
                    }
                }
            }
        }
    }

    private func halfValue<H: HalfTestScalar>(_: H.Type, _ bits: UInt16) -> Float {
        H.dtype == .float16 ? Float(Float16(bitPattern: bits)) : Float(BFloat16(bitPattern: bits))
    }

    func testDenormalsInfinitiesAndNaNPassThrough() throws {
        // Smallest and largest denormals, negative denormal, ±0, largest finite, ±inf, a NaN;
        // repeated to 19 columns so the vector body and the tail both see them.
        let bf16: [UInt16] = [0x0001, 0x007F, 0x8001, 0x0000, 0x8000, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0x3F80]
        let f16: [UInt16] = [0x0001, 0x03FF, 0x8001, 0x0000, 0x8000, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x3C00]
        try checkSpecialValuesPassThrough(BFloat16.self, bits: bf16 + bf16.prefix(9))
        try checkSpecialValuesPassThrough(Float16.self, bits: f16 + f16.prefix(9))
    }

    func testBFloat16RoundingMatchesExactArithmetic() {
        var rng = SplitMix64(seed: 10)
        for _ in 0..<20000 {
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: rng.nextUInt64()))
            let rounded = BFloat16(value)
            if value.isNaN {
                XCTAssertTrue(Float(rounded).isNaN)
                XCTAssertEqual(rounded.bitPattern & 0x8000, UInt16(value.bitPattern >> 16) & 0x8000, "NaN keeps its sign")
                continue
            }
            // The nearest bfloat16 by exact arithmetic in Double: the candidates are the value
            // truncated and the next bfloat16 away from zero (infinity counts as ±2^128, the
            // rounding rule's next step past the largest finite value).
            let down = BFloat16(bitPattern: UInt16(value.bitPattern >> 16))
            let up = BFloat16(bitPattern: down.bitPattern &+ 1)
            func exact(_ b: BFloat16) -> Double {
                Float(b).isInfinite ? (Float(b) < 0 ? -0x1p128 : 0x1p128) : Double(Float(b))
            }
            let x = Double(value)
            let expected: BFloat16
            if value.isInfinite || abs(x - exact(down)) < abs(x - exact(up)) { expected = down }
            else if abs(x - exact(down)) > abs(x - exact(up)) { expected = up }
            else { expected = down.bitPattern & 1 == 0 ? down : up }
            XCTAssertEqual(rounded.bitPattern, expected.bitPattern, "\(value)")
        }
    }

    // MARK: threads, validation

    func testBitIdenticalAcrossThreadCounts() throws {
        let spec = SoftmaxCase(batch: 1, heads: 2, keyHeads: 1, queries: 300, keys: 300, headDim: 32, valueDim: 32, causal: true)
        let inputs = SoftmaxInputs.random(spec, seed: 11)
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        var results: [[[UInt16]]] = []
        for threads in [1, 2, 3, 4] {
            try Runtime.setNumThreads(threads)
            let run = try HalfSoftmaxRun(spec, inputs, as: BFloat16.self)
            results.append([run.out.viewBits, run.dq.viewBits, run.dk.viewBits, run.dv.viewBits])
        }
        for result in results.dropFirst() { XCTAssertEqual(result, results[0]) }
    }

    func testInvalidArgumentsGiveFloat32MessagesAndWriteNothing() throws {
        let spec = SoftmaxCase(batch: 1, heads: 1, queries: 4, keys: 5, headDim: 8, valueDim: 8)
        let q = HalfBuffer<Float16>.holding(DenseTensor(shape: spec.queryShape, repeating: 0.5))
        let badKey = HalfBuffer<Float16>.holding(DenseTensor(shape: SIMD4(1, 1, 5, 6), repeating: 0.5))
        let v = HalfBuffer<Float16>.holding(DenseTensor(shape: spec.valueShape, repeating: 0.5))
        var out = HalfBuffer<Float16>(shape: spec.outputShape)
        assertThrowsPerformerError(.shapeMismatch, containing: "k.shape[3] = 6 but q.shape[3] = 8 (head dim)") {
            try q.withView { q in try badKey.withView { k in try v.withView { v in try out.withMutableView { out in
                try SoftmaxAttention.forward(query: q, key: k, value: v, output: out)
            } } } }
        }
        XCTAssertTrue(out.viewHoldsSentinel)
        // An output over an input's bytes.
        var shared = HalfBuffer<Float16>.holding(DenseTensor(shape: spec.queryShape, repeating: 0.5))
        let k = HalfBuffer<Float16>.holding(DenseTensor(shape: spec.keyShape, repeating: 0.5))
        let before = shared.viewBits
        assertThrowsPerformerError(.aliasing, containing: "output out overlaps input q") {
            try k.withView { k in try v.withView { v in try shared.withMutableView { out in
                try SoftmaxAttention.forward(query: out.readOnly, key: k, value: v, output: out)
            } } }
        }
        XCTAssertEqual(shared.viewBits, before)
        assertThrowsPerformerError(.invalidArgument, containing: "kv_lengths[0] = 6 is not in 0...5") {
            try q.withView { q in try k.withView { k in try v.withView { v in try out.withMutableView { out in
                try SoftmaxAttention.forward(query: q, key: k, value: v, output: out,
                                             options: SoftmaxAttentionOptions(keyLengths: [6]))
            } } } }
        }
        XCTAssertTrue(out.viewHoldsSentinel)
    }
}
