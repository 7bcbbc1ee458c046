// The dtype dispatch every attention entry ends in: its checked descriptors, run in the
// element types its first tensor's dtype names.
import PerformerCore

/// One C call's checked descriptors and options, ready to become typed views and be handed to
/// PerformerCore. PerformerCore has one overload for float32/float64 and one for the half
/// types (states, lse, denominators in float32), picked where the element type is known, so a
/// call states both; `run(as:)` chooses between them.
protocol TypedAttentionCall {
    /// The call on float32 or float64 tensors: tokens and states in T.
    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError)
    /// The call on float16 or bfloat16 tokens (H): states, lse and denominators in float32.
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError)
}

extension TypedAttentionCall {
    /// Runs the call in the element types of `dtype` (its first tensor's, whose companions'
    /// dtypes the entry has checked).
    func run(as dtype: DType) throws(PerformerError) {
        switch dtype {
        case .float32: try run(Float.self)
        case .float64: try run(Double.self)
        case .float16: try runHalf(Float16.self)
        case .bfloat16: try runHalf(BFloat16.self)
        }
    }
}
