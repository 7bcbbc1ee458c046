// eˣ per lane to full float64 accuracy over a large argument range, for the float64 feature
// maps (whose tests compare with the C library exp to 1e-14).
//
// exp2(x·log2 e) alone loses |x|·2⁻⁵³ relative accuracy in the product x·log2 e (4e-14 at
// |x| = 300). Here x is reduced first (Cody–Waite, the fdlibm split of ln 2):
//   k = round(x·log2 e),  r = (x − k·ln2_hi) − k·ln2_lo,  |r| ≤ ln 2 / 2,
// k·ln2_hi exact for |k| < 2²⁰ (ln2_hi has 32 significant bits), then eˣ = exp2(r·log2 e)·2ᵏ,
// both factors from the vector exp2 (2ᵏ exactly, k an integer in its normal range).
// Valid for x in [−708, 709] (2ᵏ normal and finite); callers check the range and take the C
// library's exp for vectors with a lane outside it.

/// The range of x over which `vectorNaturalExp` is accurate.
@usableFromInline let vectorNaturalExpRange: ClosedRange<Double> = -708...709

/// eˣ per lane, T = Double only (the rounding constant is float64's), x within
/// `vectorNaturalExpRange`; see the file comment.
@inline(__always) @usableFromInline
func vectorNaturalExp<T: KernelScalar>(_: T.Type, _ x: T.Vector) -> T.Vector {
    let magic = T.splat(T(6_755_399_441_055_744.0))  // 1.5·2^52 (rounds to an integer when added)
    let k = T.sub(T.add(T.mul(x, T.splat(T.log2e)), magic), magic)
    let zero = T.splat(0)
    var r = T.fma(T.sub(zero, k), T.splat(T(6.93147180369123816490e-01)), x)
    r = T.fma(T.sub(zero, k), T.splat(T(1.90821492927058770002e-10)), r)
    return T.mul(T.exp2(T.mul(r, T.splat(T.log2e))), T.exp2(k))
}
