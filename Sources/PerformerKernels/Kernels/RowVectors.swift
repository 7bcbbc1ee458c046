// Row operations on whole vectors (KernelScalar ops) with a scalar tail for counts that are not
// a multiple of the lanes: dot products of the few-query softmax path, and every O(t · max(C, M))
// step of a linear-attention chunk (denominators, per-row gradients, running sums), which cost a
// few percent of the matrix products this way instead of dominating them as scalar loops did.

/// Σ a[k]·b[k] over k < count.
@inline(__always)
func rowDot<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ count: Int) -> T {
    let (partial, covered) = rowDotPartialSums(a, b, count)
    var k = covered
    // Halving: a few shuffles instead of adding the lanes one after another.
    var sum = T.sumHalving(partial)
    while k < count {
        sum += a[k] * b[k]
        k += 1
    }
    return sum
}

/// rowDot's vector of partial sums over the whole vectors of a and b, and how many elements
/// it covers (the rest is rowDot's scalar tail).
@inline(__always)
func rowDotPartialSums<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ count: Int)
    -> (T.Vector, covered: Int) {
    let w = T.lanes
    var acc0 = T.splat(0), acc1 = T.splat(0)
    var k = 0
    while k + 2 * w <= count {
        acc0 = T.fma(T.load(a + k), T.load(b + k), acc0)
        acc1 = T.fma(T.load(a + k + w), T.load(b + k + w), acc1)
        k += 2 * w
    }
    if k + w <= count {
        acc0 = T.fma(T.load(a + k), T.load(b + k), acc0)
        k += w
    }
    return (T.add(acc0, acc1), k)
}

/// Σ a[k] over k < count.
@inline(__always)
func rowSum<T: KernelScalar>(_ a: UnsafePointer<T>, _ count: Int) -> T {
    let w = T.lanes
    var acc = T.splat(0)
    var k = 0
    while k + w <= count {
        acc = T.add(acc, T.load(a + k))
        k += w
    }
    var sum = T.sumAcross(acc)
    while k < count {
        sum += a[k]
        k += 1
    }
    return sum
}

/// y[k] += alpha·x[k] over k < count.
@inline(__always)
func rowAxpy<T: KernelScalar>(_ alpha: T, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    let w = T.lanes, a = T.splat(alpha)
    var k = 0
    while k + w <= count {
        T.store(T.fma(a, T.load(x + k), T.load(y + k)), y + k)
        k += w
    }
    while k < count {
        y[k] += alpha * x[k]
        k += 1
    }
}

/// y[k] += x[k] over k < count.
@inline(__always)
func rowAdd<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    let w = T.lanes
    var k = 0
    while k + w <= count {
        T.store(T.add(T.load(x + k), T.load(y + k)), y + k)
        k += w
    }
    while k < count {
        y[k] += x[k]
        k += 1
    }
}

/// x[k] ← x[k]/den over k < count, zeros for den = 0 (a row that sees nothing). Multiplies by
/// 1/den when that is finite (the common case, as fast as before); a subnormal den, whose
/// reciprocal overflows although the quotients need not, divides.
@inline(__always)
func divideRow<T: KernelScalar>(_ x: UnsafeMutablePointer<T>, by den: T, _ count: Int) {
    let inverse: T = den != 0 ? 1 / den : 0
    if inverse.isFinite {
        rowScale(inverse, x, x, count)
    } else {
        for k in 0..<count { x[k] /= den }
    }
}

/// y[k] = alpha·x[k] over k < count (x and y may be the same row).
@inline(__always)
func rowScale<T: KernelScalar>(_ alpha: T, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    let w = T.lanes, a = T.splat(alpha)
    var k = 0
    while k + w <= count {
        T.store(T.mul(a, T.load(x + k)), y + k)
        k += w
    }
    while k < count {
        y[k] = alpha * x[k]
        k += 1
    }
}

/// y[k] = 0 over k < count.
@inline(__always)
func rowZero<T: KernelScalar>(_ y: UnsafeMutablePointer<T>, _ count: Int) {
    y.update(repeating: 0, count: count)
}
