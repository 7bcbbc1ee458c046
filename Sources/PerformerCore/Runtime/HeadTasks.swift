/// How linear and FAVOR+ attention spread their heads over the thread pool, with one scratch
/// slot per thread, allocated before anything runs (so running out of memory writes nothing).
///
/// `.queryHeads` (forward): one task per query head. `.keyHeadGroups` (backward): one task
/// per key head, running its query heads in order; the first writes dk, dv and the rest add
/// to them, so no two threads write the same rows.
struct HeadTasks: ~Copyable {
    enum Split { case queryHeads, keyHeadGroups }

    /// One query head's turn: its indices, and whether it adds to dk, dv rather than writing
    /// them (always false for `.queryHeads`).
    struct Head {
        let b: Int, h: Int, hk: Int
        let addsToKeyGradients: Bool
        let scratch: UnsafeMutableRawPointer
    }

    private let split: Split
    private let heads: Int, keyHeads: Int
    private let count: Int, threads: Int
    private let scratch: ScratchBuffer

    /// nil when there is no task (B·H = 0, or B·Hk = 0 for `.keyHeadGroups`): nothing is allocated.
    /// `work`: the call's operations, estimated (`Runtime.threads(forWork:)`: tiny calls run inline
    /// and never read the thread count, which would consult an installed executor). No default:
    /// every call site estimates. `sizes`: the arguments that set `scratchBytes`, for the
    /// out-of-memory message (see `ScratchBuffer`).
    init?(batch: Int, heads: Int, keyHeads: Int, split: Split, scratchBytes: Int, work: Int,
          for sizes: @autoclosure () -> String) throws(PerformerError) {
        count = batch * (split == .queryHeads ? heads : keyHeads)
        guard count > 0 else { return nil }
        threads = min(Runtime.threads(forWork: work), count)
        scratch = try ScratchBuffer(slots: threads, slotBytes: scratchBytes, for: sizes())
        (self.split, self.heads, self.keyHeads) = (split, heads, keyHeads)
    }

    /// Calls `body` for every query head, on the thread pool.
    func run(_ body: (Head) -> Void) {
        let (heads, keyHeads, group) = (heads, keyHeads, heads / keyHeads)
        switch split {
        case .queryHeads:
            Runtime.parallelFor(count: count, threads: threads) { item, worker in
                let (b, h) = (item / heads, item % heads)
                body(Head(b: b, h: h, hk: h / group, addsToKeyGradients: false, scratch: scratch.slot(worker)))
            }
        case .keyHeadGroups:
            Runtime.parallelFor(count: count, threads: threads) { item, worker in
                let (b, hk) = (item / keyHeads, item % keyHeads)
                for g in 0..<group {
                    body(Head(b: b, h: hk * group + g, hk: hk, addsToKeyGradients: g > 0, scratch: scratch.slot(worker)))
                }
            }
        }
    }
}
