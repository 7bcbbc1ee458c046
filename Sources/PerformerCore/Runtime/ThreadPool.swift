import CPerformerSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The library's own worker threads: `parallelFor` runs `count` items across the calling
/// thread and up to `threads − 1` workers, handing items out one at a time from a shared
/// counter (so uneven items, like causal blocks, balance themselves).
///
/// Waiting spins for a short while before sleeping (`spinNanoseconds`, 100 µs or
/// PERFORMER_SPIN_US; both for workers between jobs and for the caller waiting for them):
/// back-to-back small calls — a decoding loop — then hand work over without a futex wake-up
/// on each side, which cost tens of µs per call here. Longer idle periods sleep on a
/// condition variable.
///
/// Only the workers a job needs are woken (each sleeps on its own condition variable), and
/// only a worker that took part in the last job polls for the next: after one call at many
/// threads, later calls at fewer threads leave the others asleep instead of waking them all.
///
/// One job runs at a time. A call made while the pool is busy (another caller thread, or a
/// nested call from inside a job) runs its items inline on its own thread: slower, never a
/// deadlock, never a wrong result. Workers are created on first need and live for the process
/// (the library is linked with `-z nodelete`, so dlclose cannot unmap code they wait in).
///
/// fork(): the child has none of the parent's workers, and a lock may have been held by a
/// thread that does not exist there. A pthread_atfork child handler (registered when the pool
/// is created) resets the pool to "no workers" in the child, which starts its own on first need.
package final class ThreadPool: @unchecked Sendable {
    package static let shared = ThreadPool()

    /// Workers beyond Runtime.maxThreads − 1 are never requested.
    private static let maxWorkers = 1024

    private let submitLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let stateLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let jobFinished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let nextItem = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    /// `generation`, readable without the lock by spinning workers.
    private let postedGeneration = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    /// Participants not yet done with the current job (the caller spins on it).
    private let pending = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    /// How long a waiting thread polls before it sleeps: PERFORMER_SPIN_US microseconds when
    /// set to an integer 0 … 1000000 (0: sleep at once), else 100.
    private let spinNanoseconds: Int64 = {
        if let text = getenv("PERFORMER_SPIN_US"), let us = Int64(String(cString: text)), (0...1_000_000).contains(us) {
            return us * 1000
        }
        return 100_000
    }()

    /// Worker i (1-based) sleeps on wakeUp[i], with asleep[i] set, so a job signals exactly
    /// the workers it needs.
    private let wakeUp = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: ThreadPool.maxWorkers + 1)
    private let asleep = UnsafeMutablePointer<Bool>.allocate(capacity: ThreadPool.maxWorkers + 1)
    /// What worker i's thread starts from, written before the thread is created. The pool owns
    /// these records: a thread owns no heap memory, which a forked child (without the parent's
    /// threads) could never free.
    private let workerStarts = UnsafeMutablePointer<WorkerStart>.allocate(capacity: ThreadPool.maxWorkers + 1)
    /// The posted job's body. Behind a pointer so that the fork child handler can drop a
    /// reference held for a call of the parent without releasing it.
    private let jobSlot = UnsafeMutablePointer<((Int, Int) -> Void)?>.allocate(capacity: 1)

    // Guarded by stateLock.
    private var workerCount = 0
    private var generation = 0
    private var participants = 0      // workers (excluding the caller) taking part in the job
    fileprivate var job: ((Int, Int) -> Void)? {
        get { jobSlot.pointee }
        set { jobSlot.pointee = newValue }
    }
    private var jobCount = 0

    private init() {
        initializeState()
        // In a forked child only the forking thread runs the handler: no other thread can
        // touch the pool while it resets.
        pthread_atfork(nil, nil, { ThreadPool.shared.initializeState() })
    }

    /// The state of a pool without workers: fresh locks and condition variables, no job.
    /// Also the fork child handler, where the old locks may be held by threads that are gone
    /// (so they are initialized again, not destroyed) and a job slot may hold a call of the
    /// parent's (dropped without a release: its closure belongs to a stack that is not there).
    private func initializeState() {
        pthread_mutex_init(submitLock, nil)
        pthread_mutex_init(stateLock, nil)
        pthread_cond_init(jobFinished, nil)
        for index in 0...Self.maxWorkers {
            pthread_cond_init(wakeUp + index, nil)
            asleep[index] = false
            workerStarts[index] = WorkerStart(pool: nil, index: index, generation: 0)
        }
        jobSlot.initialize(to: nil)
        nextItem.initialize(to: 0)
        postedGeneration.initialize(to: 0)
        pending.initialize(to: 0)
        workerCount = 0
        generation = 0
        participants = 0
        jobCount = 0
    }

    /// Polls `done` (with a CPU pause) for up to `spinNanoseconds`; true once it holds.
    private func spin(until done: () -> Bool) -> Bool {
        if spinNanoseconds == 0 { return done() }
        let deadline = psupport_monotonic_ns() + spinNanoseconds
        while true {
            for _ in 0..<64 {
                if done() { return true }
                psupport_cpu_relax()
            }
            if psupport_monotonic_ns() > deadline { return done() }
        }
    }

    /// Runs `body(item, worker)` for every item in `0..<count`, on at most `threads` threads.
    /// `worker` is in `0..<min(threads, count)` and no two concurrent calls of `body` share it,
    /// so it can index per-thread scratch.
    package func parallelFor(count: Int, threads: Int, _ body: (_ item: Int, _ worker: Int) -> Void) {
        let helpers = min(threads, count) - 1
        if helpers <= 0 || pthread_mutex_trylock(submitLock) != 0 {
            for item in 0..<count { body(item, 0) }
            return
        }
        defer { pthread_mutex_unlock(submitLock) }
        let started = ensureWorkers(helpers)
        if started == 0 {
            for item in 0..<count { body(item, 0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            psupport_atomic_store(nextItem, 0)
            pthread_mutex_lock(stateLock)
            job = body
            jobCount = count
            participants = started
            psupport_atomic_store(pending, Int64(started))
            generation += 1
            psupport_atomic_store(postedGeneration, Int64(generation))
            for index in 1...started where asleep[index] { pthread_cond_signal(wakeUp + index) }
            pthread_mutex_unlock(stateLock)

            drain(body, count: count, worker: 0)

            let allDone = spin { psupport_atomic_load(pending) == 0 }
            pthread_mutex_lock(stateLock)
            if !allDone {
                // A worker that brings `pending` to 0 signals under this lock: no lost wake-up.
                while psupport_atomic_load(pending) > 0 { pthread_cond_wait(jobFinished, stateLock) }
            }
            job = nil
            pthread_mutex_unlock(stateLock)
        }
    }

    fileprivate func drain(_ body: (Int, Int) -> Void, count: Int, worker: Int) {
        while true {
            let item = Int(psupport_atomic_fetch_add(nextItem, 1))
            if item >= count { return }
            body(item, worker)
        }
    }

    /// Starts workers until `wanted` exist (or thread creation fails); returns how many exist,
    /// capped at `wanted`.
    private func ensureWorkers(_ wanted: Int) -> Int {
        pthread_mutex_lock(stateLock)
        defer { pthread_mutex_unlock(stateLock) }
        while workerCount < min(wanted, Self.maxWorkers) {
            let index = workerCount + 1
            workerStarts[index] = WorkerStart(pool: Unmanaged.passUnretained(self).toOpaque(), index: index,
                                              generation: generation)
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let start = raw!.assumingMemoryBound(to: WorkerStart.self).pointee
                // The pool is never deallocated (`shared`), so an unretained reference is enough.
                Unmanaged<ThreadPool>.fromOpaque(start.pool!).takeUnretainedValue()
                    .workerLoop(index: start.index, seenGeneration: start.generation)
                return nil
            }, UnsafeMutableRawPointer(workerStarts + index))
            if status != 0 { break }
            pthread_detach(thread)
            workerCount += 1
        }
        return min(workerCount, wanted)
    }

    /// `seenGeneration` is the generation when the worker was created (under stateLock), so a
    /// job posted before the thread first runs is not missed.
    /// A job this worker is a participant of cannot finish without it (the caller waits for
    /// `pending` before it clears `job`), so `runJob` may read `job` after the lock is released.
    /// Only a worker that took part in the last job polls for the next one; the others sleep
    /// until a job names them (index ≤ participants), so they cost nothing while calls use
    /// fewer threads than they once did.
    private func workerLoop(index: Int, seenGeneration initial: Int) {
        var seenGeneration = initial
        var polls = true
        while true {
            let posted = polls && spin { psupport_atomic_load(postedGeneration) != Int64(seenGeneration) }
            pthread_mutex_lock(stateLock)
            if !posted {
                while generation == seenGeneration || index > participants {
                    seenGeneration = generation
                    asleep[index] = true
                    pthread_cond_wait(wakeUp + index, stateLock)
                    asleep[index] = false
                }
            }
            seenGeneration = generation
            let participant = index <= participants
            polls = participant
            let count = jobCount
            pthread_mutex_unlock(stateLock)
            guard participant, runJob(count: count, worker: index) else { continue }
            if psupport_atomic_fetch_add(pending, -1) == 1 {
                pthread_mutex_lock(stateLock)
                pthread_cond_signal(jobFinished)
                pthread_mutex_unlock(stateLock)
            }
        }
    }
}

extension ThreadPool {
    /// Drains the posted job as `worker`; false when there is none. Not inlined, so that every
    /// reference this thread took to the job's closure is released when it returns — before
    /// the worker reports done: the caller's withoutActuallyEscaping checks that no reference
    /// is left once `pending` reaches 0.
    @inline(never)
    fileprivate func runJob(count: Int, worker: Int) -> Bool {
        guard let body = job else { return false }
        drain(body, count: count, worker: worker)
        return true
    }
}

/// Worker `index`'s start: its pool (unretained) and the generation when it was created.
private struct WorkerStart {
    var pool: UnsafeMutableRawPointer?
    var index: Int
    var generation: Int
}
