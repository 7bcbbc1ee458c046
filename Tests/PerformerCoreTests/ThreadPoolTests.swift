import XCTest
#if canImport(Glibc)
import Glibc
#endif
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

    /// Callers on 8 threads at once, each item making a nested call. A caller that finds the
    /// pool busy runs its items inline as worker 0; a nested call from such an item may find
    /// the pool free by then and run on several threads. So the nested body may write only a
    /// slot of its own (outer worker, nested worker): the contract is that no two concurrent
    /// calls of one body share a worker index, not that a nested call stays on its thread.
    /// (Its first version wrote the outer worker's slot from the nested body: a data race of
    /// the test's own, which TSan reported in about one run of four.)
    func testConcurrentAndNestedCallersAllComplete() {
        let callers = 8, threads = 4, nestedItems = 3
        var totals = [Int](repeating: 0, count: callers)
        var nestedTotals = [Int](repeating: 0, count: callers)
        totals.withUnsafeMutableBufferPointer { totals in
            nestedTotals.withUnsafeMutableBufferPointer { nestedTotals in
                DispatchQueue.concurrentPerform(iterations: callers) { caller in
                    var sum = [Int](repeating: 0, count: threads)
                    var nested = [Int](repeating: 0, count: threads * threads)
                    sum.withUnsafeMutableBufferPointer { sum in
                        nested.withUnsafeMutableBufferPointer { nested in
                            ThreadPool.shared.parallelFor(count: 100, threads: threads) { item, worker in
                                ThreadPool.shared.parallelFor(count: nestedItems, threads: threads) { _, inner in
                                    nested[worker * threads + inner] += 1
                                }
                                sum[worker] += item
                            }
                        }
                    }
                    totals[caller] = sum.reduce(0, +)
                    nestedTotals[caller] = nested.reduce(0, +)
                }
            }
        }
        XCTAssertEqual(totals, [Int](repeating: 4950, count: callers))
        XCTAssertEqual(nestedTotals, [Int](repeating: 100 * nestedItems, count: callers))
    }

    /// The case that made the nested body above race in its first version, forced: a caller
    /// that finds the pool busy runs inline, and a nested call it makes once the pool is free
    /// runs on the workers too (worker indices still distinct, every item once).
    func testNestedCallOfAnInlineCallerMayRunOnWorkers() {
        let busy = DispatchSemaphore(value: 0), finish = DispatchSemaphore(value: 0), free = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            // Holds the pool: one of its two items waits until the test lets it go.
            ThreadPool.shared.parallelFor(count: 2, threads: 2) { item, _ in
                if item == 0 {
                    busy.signal()
                    finish.wait()
                }
            }
            free.signal()
        }
        busy.wait()
        let items = 100
        var workers = [Int](repeating: -1, count: items)
        var outerWorkers = [Int]()
        workers.withUnsafeMutableBufferPointer { workers in
            ThreadPool.shared.parallelFor(count: 2, threads: 2) { item, worker in
                outerWorkers.append(worker)  // inline: one thread, in order
                guard item == 0 else { return }
                finish.signal()
                free.wait()
                // Each item takes 2 ms, so a worker joins before the caller has drained them all.
                ThreadPool.shared.parallelFor(count: items, threads: 2) { nestedItem, nestedWorker in
                    workers[nestedItem] = nestedWorker
                    usleep(2000)
                }
            }
        }
        XCTAssertEqual(outerWorkers, [0, 0], "the outer call should have run inline (pool busy)")
        XCTAssertFalse(workers.contains(-1), "a nested item did not run")
        XCTAssertTrue(workers.contains(1), "the nested call ran inline only: \(workers)")
    }
}
