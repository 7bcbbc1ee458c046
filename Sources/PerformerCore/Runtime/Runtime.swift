import CPerformerSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface
import PerformerKernels
import PerformerKernelsAVX2
import PerformerKernelsAVX512

/// The instruction set a kernel build targets (portable, avx2, avx512), nameable by users of
/// PerformerCore without importing the kernel modules.
public typealias KernelISA = PerformerKernelInterface.KernelISA

/// Process-wide settings: which kernel build runs, and how many threads the library uses.
public enum Runtime {
    /// Every kernel build in the library, indexed by `KernelISA` order (portable, avx2, avx512).
    private static let kernelTables: [KernelSet] = [
        PerformerKernels.makeKernelSet(),
        PerformerKernelsAVX2.makeKernelSet(),
        PerformerKernelsAVX512.makeKernelSet(),
    ]

    /// The instruction sets this CPU runs, slowest first.
    public static let supportedISAs: [KernelISA] = {
        var isas: [KernelISA] = [.portable]
        if psupport_cpu_has_avx2_fma() != 0 { isas.append(.avx2) }
        if psupport_cpu_has_avx512() != 0 { isas.append(.avx512) }
        return isas
    }()

    /// The CPUs this process may run on when the library first asked.
    public static let availableCPUs = Int(psupport_available_cpus())

    private static let state: UnsafeMutablePointer<Int64> = {
        // state[0]: index of the selected kernel table; state[1]: thread count; state[2]: 1 when
        // that count was chosen (setNumThreads(n > 0) or PERFORMER_NUM_THREADS), so it beats an
        // executor's.
        let state = UnsafeMutablePointer<Int64>.allocate(capacity: 3)
        state[0] = Int64(KernelISA.allCases.firstIndex(of: defaultISA)!)
        state[1] = Int64(defaultThreadCount)
        state[2] = environmentThreadCount == nil ? 0 : 1
        return state
    }()

    /// The fastest supported ISA, or `PERFORMER_ISA` (portable, avx2, avx512) when it names a
    /// supported one.
    private static var defaultISA: KernelISA {
        if let name = getenv("PERFORMER_ISA"), let isa = KernelISA(rawValue: String(cString: name)),
           supportedISAs.contains(isa) {
            return isa
        }
        return supportedISAs.last!
    }

    /// `PERFORMER_NUM_THREADS` when it is a positive integer, else the available CPUs.
    private static var defaultThreadCount: Int { environmentThreadCount ?? availableCPUs }

    /// `PERFORMER_NUM_THREADS` when it is a positive integer (capped at maxThreads).
    private static var environmentThreadCount: Int? {
        if let text = getenv("PERFORMER_NUM_THREADS"), let n = Int(String(cString: text)), n > 0 {
            return min(n, maxThreads)
        }
        return nil
    }

    /// The largest thread count `setNumThreads` accepts.
    public static let maxThreads = 1024

    /// The kernel build every call uses now.
    public static var kernelISA: KernelISA { KernelISA.allCases[Int(psupport_atomic_load(state))] }

    static var kernels: KernelSet { kernelTables[Int(psupport_atomic_load(state))] }

    /// Makes every later call use the kernels built for `isa`. Throws `.unsupportedCPU` when
    /// this CPU lacks it. Meant for tests and benchmarks; calls already running finish on the
    /// kernels they started with.
    public static func selectKernels(_ isa: KernelISA) throws(PerformerError) {
        guard supportedISAs.contains(isa) else {
            throw PerformerError(.unsupportedCPU, "isa = \(isa.rawValue) is not supported by this CPU (supported: \(supportedISAs.map(\.rawValue).joined(separator: ", ")))")
        }
        psupport_atomic_store(state, Int64(KernelISA.allCases.firstIndex(of: isa)!))
    }

    /// Threads the library's calls use (the caller's thread included): a chosen count, else an
    /// installed executor's (`HostExecutor.numThreads`, 1 ... maxThreads), else the default.
    public static var numThreads: Int {
        if psupport_atomic_load(state + 2) == 0, let executor = ExecutorSlot.current, let count = executor.numThreads {
            return min(max(Int(count(executor.context)), 1), maxThreads)
        }
        return Int(psupport_atomic_load(state + 1))
    }

    /// Bounds the threads later calls use to `n` (1 ... `maxThreads`); 0 restores the default
    /// (PERFORMER_NUM_THREADS, else an installed executor's count, else the available CPUs).
    public static func setNumThreads(_ n: Int) throws(PerformerError) {
        guard n >= 0, n <= maxThreads else {
            throw PerformerError(.invalidArgument, "num_threads = \(n) is not in 0...\(maxThreads)")
        }
        psupport_atomic_store(state + 1, Int64(n == 0 ? defaultThreadCount : n))
        psupport_atomic_store(state + 2, n > 0 || environmentThreadCount != nil ? 1 : 0)
    }

    /// Makes later calls run their parallel work on `executor` (nil: the library's own threads).
    /// Calls already running finish where they started.
    public static func setExecutor(_ executor: HostExecutor?) {
        ExecutorSlot.set(executor)
    }

    /// Runs `body(item, worker)` for items `0..<count` on the library's threads, or on the
    /// installed executor's. The slot is read only when two or more tasks run, so calls with
    /// `threads` from `threads(forWork:)` = 1 never take its lock.
    static func parallelFor(count: Int, threads: Int, _ body: (Int, Int) -> Void) {
        let tasks = min(threads, count)
        if tasks >= 2, let executor = ExecutorSlot.current {
            executor.run(count: count, tasks: tasks, body)
            return
        }
        ThreadPool.shared.parallelFor(count: count, threads: threads, body)
    }
}
