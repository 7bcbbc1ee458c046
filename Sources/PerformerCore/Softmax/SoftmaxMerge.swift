import Foundation

extension SoftmaxAttention {
    /// Merges two partial softmax-attention results over disjoint key sets A and B into the
    /// result over A ∪ B (ring attention, split-key decoding):
    ///   lse = log(e^lseA + e^lseB),  out = (e^(lseA − lse) · outA + e^(lseB − lse) · outB).
    /// Rows are independent, so the result may be written over A or B (the same view: data,
    /// shape and strides); any other overlap is refused. A side whose lse is −inf saw no key and
    /// contributes nothing (its out row is never read, so it may hold anything finite or not);
    /// when both are −inf the row is 0 with lse −inf, never NaN.
    ///
    /// Shapes: outA, outB, output B×H×N×M; lseA, lseB, logSumExp B×H×N×1, any strides.
    /// Errors (nothing written): shapes, an lse that is NaN or +inf, aliasing.
    public static func merge<T: AttentionScalar>(
        outputA: TensorView<T>, logSumExpA: TensorView<T>,
        outputB: TensorView<T>, logSumExpB: TensorView<T>,
        output: MutableTensorView<T>, logSumExp: MutableTensorView<T>
    ) throws(PerformerError) {
        try merge(outputA: outputA, logSumExpA: logSumExpA, outputB: outputB, logSumExpB: logSumExpB, output: output,
                  logSumExp: logSumExp, read: { Double($0) }, write: { T($0) })
    }

    /// `merge` of half-precision partial outputs (float16 / bfloat16) with float32 log-sum-exps
    /// (docs/HALF_PRECISION.md): each out row is the float32 merge of the widened rows, rounded
    /// once to H; lse is float32 as in the float32 merge. No scratch.
    public static func merge<H: HalfPrecisionScalar>(
        outputA: TensorView<H>, logSumExpA: TensorView<Float>,
        outputB: TensorView<H>, logSumExpB: TensorView<Float>,
        output: MutableTensorView<H>, logSumExp: MutableTensorView<Float>
    ) throws(PerformerError) {
        try merge(outputA: outputA, logSumExpA: logSumExpA, outputB: outputB, logSumExpB: logSumExpB, output: output,
                  logSumExp: logSumExp, read: { Double($0.widened) }, write: { H(rounding: Float($0)) })
    }

    /// The merge of outputs in O with log-sum-exps in L; `read` widens an out element, `write`
    /// rounds a merged one (Double → O, through Float for a half O: the float32 merge, rounded).
    private static func merge<O, L: AttentionScalar>(
        outputA: TensorView<O>, logSumExpA: TensorView<L>,
        outputB: TensorView<O>, logSumExpB: TensorView<L>,
        output: MutableTensorView<O>, logSumExp: MutableTensorView<L>,
        read: (O) -> Double, write: (Double) -> O
    ) throws(PerformerError) {
        let shape = outputA.shape
        let rows = SIMD4(shape[0], shape[1], shape[2], 1)
        let meaning = "B×H×N×M of out_a"
        try ShapeCheck.expectShape(outputB, shape, name: "out_b", meaning: meaning)
        try ShapeCheck.expectShape(output.readOnly, shape, name: "out", meaning: meaning)
        try ShapeCheck.expectShape(logSumExpA, rows, name: "lse_a", meaning: "B×H×N×1 of out_a")
        try ShapeCheck.expectShape(logSumExpB, rows, name: "lse_b", meaning: "B×H×N×1 of out_a")
        try ShapeCheck.expectShape(logSumExp.readOnly, rows, name: "lse", meaning: "B×H×N×1 of out_a")
        let inputs = [try TensorFootprint(outputA, name: "out_a"), try TensorFootprint(logSumExpA, name: "lse_a"),
                      try TensorFootprint(outputB, name: "out_b"), try TensorFootprint(logSumExpB, name: "lse_b")]
        let outputs = [try TensorFootprint(output, name: "out"), try TensorFootprint(logSumExp, name: "lse")]
        try TensorFootprint.checkInPlace(outputs, replacing: inputs)
        try TensorFootprint.checkOutputsDisjoint(outputs)
        // Every lse is read before anything is written: a bad one leaves the outputs untouched.
        try checkLogSumExp(logSumExpA, name: "lse_a")
        try checkLogSumExp(logSumExpB, name: "lse_b")

        for b in 0..<shape[0] {
            for h in 0..<shape[1] {
                for i in 0..<shape[2] {
                    mergeRow(b, h, i, shape[3], outputA, logSumExpA, outputB, logSumExpB, output, logSumExp, read, write)
                }
            }
        }
    }

    private static func checkLogSumExp<T: AttentionScalar>(_ lse: TensorView<T>, name: String) throws(PerformerError) {
        for b in 0..<lse.shape[0] {
            for h in 0..<lse.shape[1] {
                for i in 0..<lse.shape[2] {
                    let value = lse.base[b * lse.strides[0] + h * lse.strides[1] + i * lse.strides[2]]
                    if value.isNaN || value == .infinity {
                        throw PerformerError(.invalidArgument, "\(name)[\(b), \(h), \(i)] = \(value) is not a log-sum-exp (must be finite or -inf)")
                    }
                }
            }
        }
    }

    /// One row; weights in Double so that float32 rows lose nothing to the exponentials.
    @inline(__always)
    private static func mergeRow<O, T: AttentionScalar>(
        _ b: Int, _ h: Int, _ i: Int, _ width: Int,
        _ outA: TensorView<O>, _ lseA: TensorView<T>, _ outB: TensorView<O>, _ lseB: TensorView<T>,
        _ out: MutableTensorView<O>, _ lse: MutableTensorView<T>, _ read: (O) -> Double, _ write: (Double) -> O
    ) {
        func at<U>(_ view: TensorView<U>) -> UnsafePointer<U> {
            view.base + b * view.strides[0] + h * view.strides[1] + i * view.strides[2]
        }
        let la = Double(at(lseA).pointee), lb = Double(at(lseB).pointee)
        let rowA = at(outA), rowB = at(outB)
        let rowOut = out.base + b * out.strides[0] + h * out.strides[1] + i * out.strides[2]
        let (sa, sb, so) = (outA.strides[3], outB.strides[3], out.strides[3])
        let high = max(la, lb)
        let lseOut = lse.base + b * lse.strides[0] + h * lse.strides[1] + i * lse.strides[2]
        guard high != -.infinity else {
            for m in 0..<width { rowOut[m * so] = write(0) }
            lseOut.pointee = T(-Double.infinity)
            return
        }
        // The larger side has weight 1 before normalization; the other exp(low − high) ≤ 1.
        let wa = la == -.infinity ? 0 : exp(la - high), wb = lb == -.infinity ? 0 : exp(lb - high)
        let total = wa + wb
        let (fa, fb) = (wa / total, wb / total)
        for m in 0..<width {
            // A side with weight 0 is not read: its row may be anything (an unset buffer).
            let a = fa == 0 ? 0 : fa * read(rowA[m * sa])
            let c = fb == 0 ? 0 : fb * read(rowB[m * sb])
            rowOut[m * so] = write(a + c)
        }
        lseOut.pointee = T(high + log(total))
    }
}
