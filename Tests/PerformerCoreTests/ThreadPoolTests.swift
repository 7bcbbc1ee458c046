import XCTest
import PerformerCore

final class ThreadPoolTests: XCTestCase {
    func testEveryItemRunsExactlyOnceOnDistinctWorkers() {
        for threads in [1, 2, 3, 8] {
            let count = 1000
            var hits = [Int](repeating: 0, count: count)
            hits.withUnsafeMutableBufferPointer { hits in
                ThreadPool.shared.parallelFor(count: count, threads: threads) { item, worker in
                    XCTAssert(worker >= 0 && worker < threads)
                    hits[item] += 1
                }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: count), "threads = \(threads)")
        }
    }

    func testConcurrentAndNestedCallersAllComplete() {
        let callers = 8
        var totals = [Int](repeating: 0, count: callers)
        totals.withUnsafeMutableBufferPointer { totals in
            DispatchQueue.concurrentPerform(iterations: callers) { caller in
                var sum = [Int](repeating: 0, count: 4)
                sum.withUnsafeMutableBufferPointer { sum in
                    ThreadPool.shared.parallelFor(count: 100, threads: 4) { item, worker in
                        // A nested call runs inline on this worker's thread.
                        ThreadPool.shared.parallelFor(count: 3, threads: 4) { _, _ in sum[worker] += 0 }
                        sum[worker] += item
                    }
                }
                totals[caller] = sum.reduce(0, +)
            }
        }
        XCTAssertEqual(totals, [Int](repeating: 4950, count: callers))
    }
}
