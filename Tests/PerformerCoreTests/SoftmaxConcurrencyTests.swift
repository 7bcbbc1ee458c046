import Foundation
import PerformerCore
import XCTest

/// Thread safety and determinism: concurrent callers get exactly the serial results, and the
/// library's own thread count does not change any output bit (each output element is computed
/// by one task, in an order that does not depend on how tasks are spread over threads). Also
/// the thread-count API.
final class SoftmaxConcurrencyTests: XCTestCase {
    /// Problems big enough that one call splits into several tasks (row blocks, heads).
    private let problems: [SoftmaxCase] = [
        SoftmaxCase(batch: 2, heads: 4, keyHeads: 2, queries: 150, keys: 130, headDim: 32, valueDim: 24, causal: true,
                    keyLengths: [130, 77]),
        SoftmaxCase(batch: 1, heads: 2, keyHeads: 1, queries: 65, keys: 200, headDim: 16, valueDim: 16),
        SoftmaxCase(batch: 3, heads: 2, keyHeads: 2, queries: 129, keys: 129, headDim: 8, valueDim: 40, causal: true),
        SoftmaxCase(batch: 2, heads: 1, queries: 90, keys: 33, headDim: 64, valueDim: 8, causal: true, keyLengths: [0, 20]),
        // Four query heads per key head: one thread runs a fused task per key head, more
        // threads a task per query head whose dK, dV are added up afterwards, in head order.
        SoftmaxCase(batch: 1, heads: 4, keyHeads: 1, queries: 70, keys: 300, headDim: 16, valueDim: 8, causal: true),
        // Left and right padding: each batch row's key window (and an empty one) in every layout.
        SoftmaxCase(batch: 3, heads: 4, keyHeads: 2, queries: 100, keys: 400, headDim: 16, valueDim: 8, causal: true,
                    keyLengths: [400, 350, 200], keyStarts: [0, 150, 200]),
    ]

    private func withThreadCount<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        try! Runtime.setNumThreads(n)
        XCTAssertEqual(Runtime.numThreads, n)
        return try body()
    }

    private func assertBitIdentical(_ a: SoftmaxOutputs, _ b: SoftmaxOutputs, _ label: String,
                                    file: StaticString = #filePath, line: UInt = #line) {
        for ((name, x), (_, y)) in zip(a.all, b.all) {
            // Compare bit patterns, so −0 vs 0 or differing NaNs would count as a difference.
            XCTAssertEqual(x.values.map(\.bitPattern), y.values.map(\.bitPattern), "\(name) \(label)", file: file, line: line)
        }
    }

    func testConcurrentCallersMatchSerialCallsBitForBit() throws {
        let callers = 8
        let jobs = (0..<callers).map { caller in
            (spec: problems[caller % problems.count], inputs: SoftmaxInputs.random(problems[caller % problems.count],
                                                                                  seed: 600 + UInt64(caller)))
        }
        let serial = try jobs.map { try SoftmaxHarness.run($0.spec, $0.inputs, as: Float.self).outputs }
        let serialDouble = try jobs.map { try SoftmaxHarness.run($0.spec, $0.inputs, as: Double.self).outputs }
        for round in 0..<3 {
            var concurrent = [SoftmaxOutputs?](repeating: nil, count: callers)
            var concurrentDouble = [SoftmaxOutputs?](repeating: nil, count: callers)
            concurrent.withUnsafeMutableBufferPointer { results in
                concurrentDouble.withUnsafeMutableBufferPointer { resultsDouble in
                    DispatchQueue.concurrentPerform(iterations: callers) { caller in
                        let job = jobs[caller]
                        // Half the callers work in float64 first, so the two entry points also overlap.
                        if caller % 2 == 0 {
                            results[caller] = try? SoftmaxHarness.run(job.spec, job.inputs, as: Float.self).outputs
                            resultsDouble[caller] = try? SoftmaxHarness.run(job.spec, job.inputs, as: Double.self).outputs
                        } else {
                            resultsDouble[caller] = try? SoftmaxHarness.run(job.spec, job.inputs, as: Double.self).outputs
                            results[caller] = try? SoftmaxHarness.run(job.spec, job.inputs, as: Float.self).outputs
                        }
                    }
                }
            }
            for caller in 0..<callers {
                guard let result = concurrent[caller], let resultDouble = concurrentDouble[caller] else {
                    XCTFail("caller \(caller) threw in round \(round)")
                    continue
                }
                assertBitIdentical(result, serial[caller], "float32 caller \(caller) round \(round)")
                assertBitIdentical(resultDouble, serialDouble[caller], "float64 caller \(caller) round \(round)")
            }
        }
    }

    func testThreadCountDoesNotChangeAnyOutputBit() throws {
        try forEachSupportedISA { isa in
            for (index, spec) in problems.enumerated() {
                let inputs = SoftmaxInputs.random(spec, seed: 700 + UInt64(index))
                let single = try withThreadCount(1) { try SoftmaxHarness.run(spec, inputs, as: Float.self).outputs }
                let singleDouble = try withThreadCount(1) { try SoftmaxHarness.run(spec, inputs, as: Double.self).outputs }
                for threads in [2, 3, 4] {
                    let multi = try withThreadCount(threads) { try SoftmaxHarness.run(spec, inputs, as: Float.self).outputs }
                    assertBitIdentical(multi, single, "float32 \(spec) threads=\(threads) isa=\(isa)")
                }
                let multiDouble = try withThreadCount(4) { try SoftmaxHarness.run(spec, inputs, as: Double.self).outputs }
                assertBitIdentical(multiDouble, singleDouble, "float64 \(spec) threads=4 isa=\(isa)")
            }
        }
    }

    func testRepeatedCallsAreDeterministic() throws {
        let spec = problems[0]
        let inputs = SoftmaxInputs.random(spec, seed: 800)
        let first = try SoftmaxHarness.run(spec, inputs, as: Float.self).outputs
        for _ in 0..<3 {
            assertBitIdentical(try SoftmaxHarness.run(spec, inputs, as: Float.self).outputs, first, "repeat")
        }
    }

    // MARK: thread-count API

    /// The default the library documents: PERFORMER_NUM_THREADS when a positive integer (at
    /// most maxThreads), else the CPUs available to the process.
    private var documentedDefaultThreads: Int {
        if let text = ProcessInfo.processInfo.environment["PERFORMER_NUM_THREADS"], let n = Int(text), n > 0 {
            return min(n, Runtime.maxThreads)
        }
        return Runtime.availableCPUs
    }

    func testSetNumThreadsZeroRestoresTheDefault() throws {
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        XCTAssertGreaterThanOrEqual(Runtime.availableCPUs, 1)
        try Runtime.setNumThreads(3)
        XCTAssertEqual(Runtime.numThreads, 3)
        try Runtime.setNumThreads(0)
        XCTAssertEqual(Runtime.numThreads, documentedDefaultThreads)
        try Runtime.setNumThreads(1)
        XCTAssertEqual(Runtime.numThreads, 1)
        try Runtime.setNumThreads(0)
        XCTAssertEqual(Runtime.numThreads, documentedDefaultThreads)
    }

    func testSetNumThreadsOutOfRangeThrowsAndKeepsTheSetting() throws {
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        try Runtime.setNumThreads(2)
        for bad in [-1, -1000, Int.min, Runtime.maxThreads + 1, Int.max] {
            assertThrowsPerformerError(.invalidArgument, containing: "num_threads", "n = \(bad)") {
                try Runtime.setNumThreads(bad)
            }
            XCTAssertEqual(Runtime.numThreads, 2, "a rejected value changed the setting (n = \(bad))")
        }
    }

    func testLargestThreadCountIsAcceptedAndComputesTheSameResult() throws {
        let spec = SoftmaxCase(batch: 1, heads: 2, queries: 100, keys: 40, headDim: 8, valueDim: 8, causal: true)
        let inputs = SoftmaxInputs.random(spec, seed: 801)
        let reference = try withThreadCount(1) { try SoftmaxHarness.run(spec, inputs, as: Float.self).outputs }
        let widest = try withThreadCount(Runtime.maxThreads) { try SoftmaxHarness.run(spec, inputs, as: Float.self).outputs }
        assertBitIdentical(widest, reference, "maxThreads")
    }

    func testSelectingKernelsTheCPULacksThrowsAndKeepsTheSelection() throws {
        let selected = Runtime.kernelISA
        let supported = Runtime.supportedISAs
        XCTAssertEqual(supported.first?.rawValue, "portable", "the portable build is always available")
        XCTAssertTrue(supported.contains(selected))
        let unsupportedNames = ["portable", "avx2", "avx512"].filter { name in !supported.contains { $0.rawValue == name } }
        for name in unsupportedNames {
            // Reach the case by name: KernelISA is not re-exported by PerformerCore.
            guard let isa = type(of: selected).init(rawValue: name) else { XCTFail("no ISA named \(name)"); continue }
            assertThrowsPerformerError(.unsupportedCPU, containing: name) { try Runtime.selectKernels(isa) }
            XCTAssertEqual(Runtime.kernelISA, selected)
        }
    }
}
