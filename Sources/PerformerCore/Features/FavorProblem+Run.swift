import PerformerKernelInterface

/// How a checked FAVOR+ problem reaches the kernels: one task per head on the thread pool, the
/// scratch and thread count this problem needs, the projection in the token type.
extension FavorProblem {
    enum Pass { case forward, backward }

    /// Runs the `pass` kernel on every head: `.forward` one task per query head, `.backward` one
    /// per key-head group (`HeadTasks`). Each head's task has q, k, v, the projection and scratch
    /// set; `fill` adds the rest (outputs, states, gradients) before the kernel runs.
    func run<T: AttentionScalar>(
        _ pass: Pass, query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        fill: (inout FavorAttentionTask, HeadTasks.Head) -> Void
    ) throws(PerformerError) {
        let kernels = Runtime.kernels.favorAttention
        let backward = pass == .backward
        guard let tasks = try HeadTasks(
            batch: batch, heads: heads, keyHeads: keyHeads, split: backward ? .keyHeadGroups : .queryHeads,
            scratchBytes: kernels.scratchBytes(shape, MemoryLayout<T>.stride, options.causal, backward),
            work: backward ? Runtime.work(work, 3) : work,
            for: argumentSizes)
        else { return }
        let entry = switch (pass, T.dtype == .float32) {
        case (.forward, true): kernels.forwardFloat
        case (.forward, false): kernels.forwardDouble
        case (.backward, true): kernels.backwardFloat
        case (.backward, false): kernels.backwardDouble
        }
        let w = projection.matrix(as: T.self)
        w.withUnsafeBytes { wBytes in
            tasks.run { head in
                var task = self.task(b: head.b, h: head.h, query: query, key: key, value: value,
                                     projection: wBytes.baseAddress!, scratch: head.scratch)
                fill(&task, head)
                entry(&task)
            }
        }
    }
}

extension FavorAttentionTask {
    /// Head (b, h) of the state the kernel starts from (nil: none).
    mutating func setInitialState<T: AttentionScalar>(_ state: FavorStateView<T>?, _ b: Int, _ h: Int) {
        initialS = state?.s.matrix(b, h)
        initialZ = state?.z.matrix(b, h)
        initialC = state?.c.matrix(b, h)
    }

    /// Head (b, h) of the state the kernel writes after its last key (nil: none).
    mutating func setFinalState<T: AttentionScalar>(_ state: MutableFavorStateView<T>?, _ b: Int, _ h: Int) {
        finalS = state?.s.matrix(b, h)
        finalZ = state?.z.matrix(b, h)
        finalC = state?.c.matrix(b, h)
    }
}
