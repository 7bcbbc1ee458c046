// performer_softmax_merge (performer.h: "Merging partial softmax results"): descriptors in,
// PerformerCore's SoftmaxAttention.merge does the checks and the work.
import CPerformerABI
import PerformerCore

@_cdecl("performer_softmax_merge")
public func performer_softmax_merge(
    _ outA: UnsafePointer<performer_tensor_t>?, _ lseA: UnsafePointer<performer_tensor_t>?,
    _ outB: UnsafePointer<performer_tensor_t>?, _ lseB: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?, _ lse: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let outA = try TensorArgument(outA, name: "out_a"), lseA = try TensorArgument(lseA, name: "lse_a")
        let outB = try TensorArgument(outB, name: "out_b"), lseB = try TensorArgument(lseB, name: "lse_b")
        let out = try TensorArgument(out, name: "out"), lse = try TensorArgument(lse, name: "lse")
        // Half partial outputs come with float32 log-sum-exps (performer.h, "Half precision").
        try TensorArgument.expectDTypes(tokens: [outB, out], states: [lseA, lseB, lse], as: outA)
        switch outA.dtype {
        case .float32: try merge(Float.self, outA, lseA, outB, lseB, out, lse)
        case .float64: try merge(Double.self, outA, lseA, outB, lseB, out, lse)
        case .float16: try mergeHalf(Float16.self, outA, lseA, outB, lseB, out, lse)
        case .bfloat16: try mergeHalf(BFloat16.self, outA, lseA, outB, lseB, out, lse)
        }
    }
}

private func merge<T: AttentionScalar>(
    _: T.Type, _ outA: TensorArgument, _ lseA: TensorArgument, _ outB: TensorArgument, _ lseB: TensorArgument,
    _ out: TensorArgument, _ lse: TensorArgument
) throws(PerformerError) {
    try SoftmaxAttention.merge(
        outputA: outA.view(T.self), logSumExpA: lseA.view(T.self), outputB: outB.view(T.self),
        logSumExpB: lseB.view(T.self), output: out.mutableView(T.self), logSumExp: lse.mutableView(T.self))
}

private func mergeHalf<H: HalfPrecisionScalar>(
    _: H.Type, _ outA: TensorArgument, _ lseA: TensorArgument, _ outB: TensorArgument, _ lseB: TensorArgument,
    _ out: TensorArgument, _ lse: TensorArgument
) throws(PerformerError) {
    try SoftmaxAttention.merge(
        outputA: outA.view(H.self), logSumExpA: lseA.view(Float.self), outputB: outB.view(H.self),
        logSumExpB: lseB.view(Float.self), output: out.mutableView(H.self), logSumExp: lse.mutableView(Float.self))
}
