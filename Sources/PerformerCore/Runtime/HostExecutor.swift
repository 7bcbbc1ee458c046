import CPerformerSupport

/// A host's thread pool that runs the library's parallel work instead of `ThreadPool`
/// (performer.h: performer_executor_t). In a process whose own pool keeps its workers spinning
/// between regions (PyTorch's OpenMP threads), a second pool fights them for the same cores;
/// handing our tasks to the host's waiting threads avoids that.
public struct HostExecutor: @unchecked Sendable {
    /// One task of a parallel region: task(taskContext, i).
    public typealias Task = @convention(c) (UnsafeMutableRawPointer?, Int32) -> Void
    /// The host's thread count now, given the executor's context.
    public typealias NumThreads = @convention(c) (UnsafeMutableRawPointer?) -> Int32
    /// parallelFor(context, n, task, taskContext): runs the n tasks and returns when all have.
    public typealias ParallelFor = @convention(c) (UnsafeMutableRawPointer?, Int32, Task?, UnsafeMutableRawPointer?) -> Void

    /// The host's pointer, passed back to `numThreads` and `parallelFor`.
    public let context: UnsafeMutableRawPointer?
    /// The threads the host would use now; nil: the library's default count.
    public let numThreads: NumThreads?
    /// Runs task(taskContext, i) for i in 0..<n, returning when all have returned.
    public let parallelFor: ParallelFor

    /// An executor of the host's functions; install it with `Runtime.setExecutor(_:)`.
    public init(context: UnsafeMutableRawPointer?, numThreads: NumThreads?, parallelFor: @escaping ParallelFor) {
        self.context = context
        self.numThreads = numThreads
        self.parallelFor = parallelFor
    }
}

/// The installed executor. Read at the start of each multi-threaded call; `installed` lets calls
/// skip the lock when there is none (the usual case).
enum ExecutorSlot {
    // The flag and the lock are C statics (CPerformerSupport): the first call may come from
    // several threads at once, and they need no lazy initialization. `executor` is only
    // touched under the lock, after `set` wrote it.
    nonisolated(unsafe) private static var executor: HostExecutor?

    static var current: HostExecutor? {
        guard psupport_atomic_load(psupport_executor_installed()) != 0 else { return nil }
        psupport_executor_lock()
        defer { psupport_executor_unlock() }
        return executor
    }

    static func set(_ newValue: HostExecutor?) {
        psupport_executor_lock()
        executor = newValue
        psupport_atomic_store(psupport_executor_installed(), newValue == nil ? 0 : 1)
        psupport_executor_unlock()
    }
}

/// One call's work as the executor's tasks see it: task i drains the shared item counter as
/// worker i (so per-worker scratch stays private), like a ThreadPool participant.
private struct HostJob {
    let body: (Int, Int) -> Void
    let count: Int
    let nextItem: UnsafeMutablePointer<Int64>

    func drain(worker: Int) {
        while true {
            let item = Int(psupport_atomic_fetch_add(nextItem, 1))
            if item >= count { return }
            body(item, worker)
        }
    }
}

/// Not inlined: the task's references to the job's closure are released before it returns,
/// as withoutActuallyEscaping requires once parallelFor is back.
@inline(never)
private func runHostTask(_ raw: UnsafeMutableRawPointer?, _ index: Int32) {
    raw!.assumingMemoryBound(to: HostJob.self).pointee.drain(worker: Int(index))
}

extension HostExecutor {
    /// Runs `body(item, worker)` for items 0..<count as `tasks` (≥ 2) executor tasks, workers
    /// 0..<tasks. Items an executor failed to run are finished here as worker 0 (no task runs
    /// any more once parallelFor has returned), so results never depend on the executor.
    func run(count: Int, tasks: Int, _ body: (Int, Int) -> Void) {
        let nextItem = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        nextItem.initialize(to: 0)
        defer { nextItem.deallocate() }
        withoutActuallyEscaping(body) { body in
            var job = HostJob(body: body, count: count, nextItem: nextItem)
            withUnsafeMutablePointer(to: &job) { pointer in
                parallelFor(context, Int32(tasks), { raw, index in runHostTask(raw, index) }, UnsafeMutableRawPointer(pointer))
            }
            job.drain(worker: 0)
        }
    }
}
