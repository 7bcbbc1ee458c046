#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

// The feature maps φ and their derivatives, applied row by row while packing a strided input row
// into contiguous chunk scratch (so the chunk products read dense memory whatever the caller's
// strides were).

/// eˣ in the precision of T (expf for Float, exp for Double).
@inline(__always)
func linearExp<T: KernelScalar>(_ x: T) -> T {
    if T.self == Float.self { return T(expf(Float(x))) }
    return T(LibM.exp(Double(x)))
}

/// Writes φ(row) (D values, C = D) into `features`: a strided copy, then φ in place on whole
/// vectors (elu+1 through the shared vector exp2 for x ≤ 0), the last D mod lanes values by scalar code.
@inline(__always)
func packFeatures<T: KernelScalar>(
    _ source: StridedMatrix, row: Int, count: Int, map: LinearFeatureKind, into features: UnsafeMutablePointer<T>
) {
    packRow(source, row: row, count: count, into: features)
    if map == .identity { return }
    let w = T.lanes, zero = T.splat(0)
    var c = 0
    switch map {
    case .eluPlusOne:
        let one = T.splat(1), log2e = T.splat(T.log2e)
        while c + w <= count {
            let x = T.load(features + c)
            // x ≤ 0 is the only case that uses the exponential, so the x ≤ 0 exp2 (no upper
            // clamp, degree 5: 1.57e-7 relative at worst against vectorExp2's 2.25e-7) serves;
            // a positive lane's value (2^x, or inf) is not selected.
            let e = T.exp2NonPositive(T.mul(x, log2e))
            T.store(T.selectLess(zero, x, T.add(x, one), e), features + c)
            c += w
        }
        while c < count {
            let x = features[c]
            features[c] = x > 0 ? x + 1 : linearExp(x)
            c += 1
        }
    case .relu:
        while c + w <= count {
            T.store(T.max(T.load(features + c), zero), features + c)
            c += w
        }
        while c < count {
            features[c] = max(features[c], 0)
            c += 1
        }
    case .identity:
        break
    }
}

/// Turns the gradient with respect to φ(x) into the gradient with respect to x (multiplies by
/// φ'(x) elementwise, in place in `featureGradient`) and stores it into row `row` of `gradient`,
/// or adds it when `accumulate`. φ' is read off the features themselves, so no exponential is
/// evaluated again: elu+1: φ' = 1 where φ > 1 (x > 0), else φ' = eˣ = φ;  relu: φ' = 1 where
/// φ > 0;  identity: 1.
@inline(__always)
func storeInputGradient<T: KernelScalar>(
    _ featureGradient: UnsafeMutablePointer<T>, features: UnsafePointer<T>, count: Int, map: LinearFeatureKind,
    into gradient: StridedMatrix, row: Int, accumulate: Bool
) {
    let w = T.lanes, one = T.splat(1), zero = T.splat(0)
    var c = 0
    switch map {
    case .eluPlusOne:
        while c + w <= count {
            let phi = T.load(features + c), g = T.load(featureGradient + c)
            T.store(T.selectLess(one, phi, g, T.mul(g, phi)), featureGradient + c)
            c += w
        }
        while c < count {
            let phi = features[c]
            if !(phi > 1) { featureGradient[c] *= phi }
            c += 1
        }
    case .relu:
        while c + w <= count {
            T.store(T.selectLess(zero, T.load(features + c), T.load(featureGradient + c), zero), featureGradient + c)
            c += w
        }
        while c < count {
            if !(features[c] > 0) { featureGradient[c] = 0 }
            c += 1
        }
    case .identity:
        break
    }
    storeRow(featureGradient, count: count, into: gradient, row: row, accumulate: accumulate)
}

/// Copies a strided row of `count` values into contiguous memory (whole vectors when the row is
/// contiguous).
@inline(__always)
func packRow<T: KernelScalar>(_ source: StridedMatrix, row: Int, count: Int, into target: UnsafeMutablePointer<T>) {
    let base = source.base.assumingMemoryBound(to: T.self) + row * source.rowStride
    let step = source.columnStride
    var c = 0
    if step == 1 {
        let w = T.lanes
        while c + w <= count {
            T.store(T.load(base + c), target + c)
            c += w
        }
    }
    while c < count {
        target[c] = base[c * step]
        c += 1
    }
}

/// Packs a strided row of `count` values times `scale` into contiguous memory and returns the
/// sum of squares of what it stored (FAVOR+'s x̂ = x·s^(1/2) and ‖x̂‖²), on whole vectors when
/// the row is contiguous.
@inline(__always)
func packScaledRow<T: KernelScalar>(
    _ source: StridedMatrix, row: Int, count: Int, scale: T, into target: UnsafeMutablePointer<T>
) -> T {
    let base = source.base.assumingMemoryBound(to: T.self) + row * source.rowStride
    let step = source.columnStride, scaleV = T.splat(scale)
    var squares: T = 0, squaresV = T.splat(0)
    var c = 0
    if step == 1 {
        while c + T.lanes <= count {
            let x = T.mul(T.load(base + c), scaleV)
            T.store(x, target + c)
            squaresV = T.fma(x, x, squaresV)
            c += T.lanes
        }
    }
    while c < count {
        let x = base[c * step] * scale
        target[c] = x
        squares += x * x
        c += 1
    }
    return squares + T.sumHalving(squaresV)
}

/// Stores a contiguous row into a strided matrix row (or adds it when `accumulate`), on whole
/// vectors when the target row is contiguous.
@inline(__always)
func storeRow<T: KernelScalar>(
    _ values: UnsafePointer<T>, count: Int, into target: StridedMatrix, row: Int, accumulate: Bool
) {
    let base = target.base.assumingMemoryBound(to: T.self) + row * target.rowStride
    let step = target.columnStride
    var c = 0
    if step == 1 {
        if accumulate {
            rowAdd(values, base, count)
        } else {
            let w = T.lanes
            while c + w <= count {
                T.store(T.load(values + c), base + c)
                c += w
            }
            while c < count {
                base[c] = values[c]
                c += 1
            }
        }
        return
    }
    if accumulate {
        for c in 0..<count { base[c * step] += values[c] }
    } else {
        for c in 0..<count { base[c * step] = values[c] }
    }
}
