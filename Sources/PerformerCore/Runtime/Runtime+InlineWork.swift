/// Tiny calls run on the calling thread: handing tasks to workers costs a few microseconds
/// while they poll and tens of microseconds once they sleep (more on a loaded machine), which
/// dwarfs a decode step's arithmetic (8 heads against one key: about 2 000 operations). Every
/// call site estimates its floating-point work and asks for its thread count here. Results do
/// not depend on the thread count, so this changes speed only.
extension Runtime {
    /// Calls estimated below this many operations (about 5–20 µs of arithmetic here) run inline.
    /// Tests set it to 0 to give a tiny call the layout of a large one (which must give the same bits).
    nonisolated(unsafe) package static var inlineWorkLimit = 1 << 19

    /// The threads a call of about `work` operations uses: 1 below `inlineWorkLimit`, else the
    /// library's count.
    static func threads(forWork work: Int) -> Int { work < inlineWorkLimit ? 1 : numThreads }

    /// The product of non-negative `factors`, saturating at Int.max (estimates of huge problems
    /// must not trap).
    static func work(_ factors: Int...) -> Int {
        var product = 1
        for factor in factors {
            let (next, overflow) = product.multipliedReportingOverflow(by: max(factor, 0))
            if overflow { return .max }
            product = next
        }
        return product
    }
}
