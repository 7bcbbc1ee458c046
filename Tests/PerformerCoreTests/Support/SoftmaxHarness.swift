import PerformerCore
import XCTest

/// The sizes and options of one softmax-attention test case.
struct SoftmaxCase: CustomStringConvertible {
    var batch = 1
    var heads = 1
    var keyHeads = 1
    var queries: Int
    var keys: Int
    var headDim: Int
    var valueDim: Int
    var causal = false
    var scale: Double? = nil
    var keyLengths: [Int]? = nil
    var keyStarts: [Int]? = nil

    var options: SoftmaxAttentionOptions {
        SoftmaxAttentionOptions(causal: causal, scale: scale, keyLengths: keyLengths, keyStarts: keyStarts)
    }
    var queryShape: SIMD4<Int> { SIMD4(batch, heads, queries, headDim) }
    var keyShape: SIMD4<Int> { SIMD4(batch, keyHeads, keys, headDim) }
    var valueShape: SIMD4<Int> { SIMD4(batch, keyHeads, keys, valueDim) }
    var outputShape: SIMD4<Int> { SIMD4(batch, heads, queries, valueDim) }
    var logSumExpShape: SIMD4<Int> { SIMD4(batch, heads, queries, 1) }

    var description: String {
        var text = "B=\(batch) H=\(heads) Hk=\(keyHeads) N=\(queries) L=\(keys) D=\(headDim) M=\(valueDim)"
        if causal { text += " causal" }
        if let scale { text += " scale=\(scale)" }
        if let keyLengths { text += " kv_len=\(keyLengths)" }
        if let keyStarts { text += " kv_starts=\(keyStarts)" }
        return text
    }
}

/// Memory layouts for every tensor of a forward + backward call.
struct SoftmaxLayouts {
    var q = Layout.contiguous, k = Layout.contiguous, v = Layout.contiguous, dout = Layout.contiguous
    var out = Layout.contiguous, lse = Layout.contiguous
    var dq = Layout.contiguous, dk = Layout.contiguous, dv = Layout.contiguous
}

/// Inputs of one case, in float64 (the library receives them rounded to its element type).
struct SoftmaxInputs {
    var q: DenseTensor, k: DenseTensor, v: DenseTensor, dout: DenseTensor

    static func random(_ spec: SoftmaxCase, seed: UInt64) -> SoftmaxInputs {
        var rng = SplitMix64(seed: seed)
        return SoftmaxInputs(
            q: .random(spec.queryShape, &rng), k: .random(spec.keyShape, &rng),
            v: .random(spec.valueShape, &rng), dout: .random(spec.outputShape, &rng))
    }

    func reference(_ spec: SoftmaxCase) -> SoftmaxReference.Result {
        SoftmaxReference.evaluate(q: q, k: k, v: v, dout: dout, options: spec.options)
    }
}

/// What the library wrote, read back through the output views, in float64.
struct SoftmaxOutputs {
    var out: DenseTensor, lse: DenseTensor
    var dq: DenseTensor?, dk: DenseTensor?, dv: DenseTensor?
    /// Whether every element outside every output view (gaps, guards) still holds its sentinel.
    var wroteOnlyInsideViews: Bool

    var all: [(String, DenseTensor)] {
        var list = [("out", out), ("lse", lse)]
        if let dq, let dk, let dv { list += [("dq", dq), ("dk", dk), ("dv", dv)] }
        return list
    }
}

enum SoftmaxHarness {
    /// Runs forward (with lse) and, when asked, backward (from the forward's own out and lse)
    /// through strided buffers in `layouts`. Returns the inputs as the kernels saw them
    /// (rounded to T, broadcast axes replicated) and the outputs.
    static func run<T: AttentionScalar>(
        _ spec: SoftmaxCase, _ inputs: SoftmaxInputs, as _: T.Type, layouts: SoftmaxLayouts = SoftmaxLayouts(),
        backward: Bool = true
    ) throws -> (seen: SoftmaxInputs, outputs: SoftmaxOutputs) {
        let q = StridedBuffer<T>.holding(inputs.q, layout: layouts.q)
        let k = StridedBuffer<T>.holding(inputs.k, layout: layouts.k)
        let v = StridedBuffer<T>.holding(inputs.v, layout: layouts.v)
        let dout = StridedBuffer<T>.holding(inputs.dout, layout: layouts.dout)
        var out = StridedBuffer<T>(shape: spec.outputShape, layout: layouts.out)
        var lse = StridedBuffer<T>(shape: spec.logSumExpShape, layout: layouts.lse)
        var dq = StridedBuffer<T>(shape: spec.queryShape, layout: layouts.dq)
        var dk = StridedBuffer<T>(shape: spec.keyShape, layout: layouts.dk)
        var dv = StridedBuffer<T>(shape: spec.valueShape, layout: layouts.dv)
        let options = spec.options

        try q.withView { q in try k.withView { k in try v.withView { v in
            try out.withMutableView { out in try lse.withMutableView { lse in
                try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, logSumExp: lse, options: options)
            } }
        } } }
        if backward {
            try q.withView { q in try k.withView { k in try v.withView { v in
                try out.withView { out in try lse.withView { lse in try dout.withView { dout in
                    try dq.withMutableView { dq in try dk.withMutableView { dk in try dv.withMutableView { dv in
                        try SoftmaxAttention.backward(
                            query: q, key: k, value: v, output: out, logSumExp: lse, outputGradient: dout,
                            queryGradient: dq, keyGradient: dk, valueGradient: dv, options: options)
                    } } }
                } } }
            } } }
        }
        let seen = SoftmaxInputs(q: q.load(), k: k.load(), v: v.load(), dout: dout.load())
        var outputs = SoftmaxOutputs(
            out: out.load(), lse: lse.load(),
            wroteOnlyInsideViews: out.untouchedOutsideView && lse.untouchedOutsideView)
        if backward {
            outputs.dq = dq.load()
            outputs.dk = dk.load()
            outputs.dv = dv.load()
            outputs.wroteOnlyInsideViews = outputs.wroteOnlyInsideViews
                && dq.untouchedOutsideView && dk.untouchedOutsideView && dv.untouchedOutsideView
        }
        return (seen, outputs)
    }

    /// Runs `spec` in T and checks out, lse and (when `backward`) every gradient against the
    /// float64 reference on the inputs the kernels saw: relative error ≤ `tolerance` each.
    /// Returns the largest error, for reports.
    @discardableResult
    static func check<T: AttentionScalar>(
        _ spec: SoftmaxCase, as type: T.Type, seed: UInt64, tolerance: Double,
        layouts: SoftmaxLayouts = SoftmaxLayouts(), backward: Bool = true, inputs given: SoftmaxInputs? = nil,
        context: String = "", file: StaticString = #filePath, line: UInt = #line
    ) -> Double {
        let inputs = given ?? SoftmaxInputs.random(spec, seed: seed)
        let label = "\(T.self) \(spec) seed=\(seed) isa=\(Runtime.kernelISA.rawValue) \(context)"
        let seen: SoftmaxInputs, outputs: SoftmaxOutputs
        do {
            (seen, outputs) = try run(spec, inputs, as: type, layouts: layouts, backward: backward)
        } catch {
            XCTFail("\(label): threw \(error)", file: file, line: line)
            return .infinity
        }
        let reference = seen.reference(spec)
        let expected = [("out", reference.out), ("lse", reference.lse), ("dq", reference.dq),
                        ("dk", reference.dk), ("dv", reference.dv)]
        var worst = 0.0
        for ((name, actual), (_, wanted)) in zip(outputs.all, expected) {
            XCTAssertFalse(actual.containsNaN, "\(label): \(name) contains NaN", file: file, line: line)
            let error = relativeError(actual, wanted)
            worst = max(worst, error)
            XCTAssertLessThanOrEqual(error, tolerance, "\(label): \(name) relative error", file: file, line: line)
        }
        XCTAssertTrue(outputs.wroteOnlyInsideViews, "\(label): wrote outside an output view", file: file, line: line)
        return worst
    }
}

/// Runs `body` once per kernel build this CPU supports (each is a separate compilation of the
/// kernel sources), passing the build's name, then restores the build that was selected before.
/// (`KernelISA` lives in a module PerformerCore does not re-export, so tests pass names.)
func forEachSupportedISA(_ body: (String) throws -> Void) rethrows {
    let original = Runtime.kernelISA
    defer { try! Runtime.selectKernels(original) }
    for isa in Runtime.supportedISAs {
        try! Runtime.selectKernels(isa)
        XCTAssertEqual(Runtime.kernelISA, isa)
        try body(isa.rawValue)
    }
}

/// Asserts that `body` throws a PerformerError with `status` whose message contains `fragment`.
func assertThrowsPerformerError(
    _ status: PerformerStatus, containing fragment: String, _ context: String = "",
    file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void
) {
    do {
        try body()
        XCTFail("\(context): expected \(status) mentioning \"\(fragment)\", but the call succeeded", file: file, line: line)
    } catch let error as PerformerError {
        XCTAssertEqual(error.status, status, "\(context): \(error.message)", file: file, line: line)
        XCTAssertTrue(error.message.contains(fragment),
                      "\(context): message \"\(error.message)\" does not mention \"\(fragment)\"", file: file, line: line)
    } catch {
        XCTFail("\(context): threw a non-PerformerError \(error)", file: file, line: line)
    }
}
