// Vector 2^x for x ≤ 0 (up to 127): the softmax probabilities, 2^(S − max) and 2^(S − lse).
//
// Same reduction as vectorExp2 (x = n + f, |f| ≤ 1/2, 2^n in the exponent bits, exactly 0 for
// x = −inf and x ≤ −127.5, no denormals), but for Float (a) no upper clamp, since callers pass
// x ≤ 0 up to rounding, and (b) a degree-5 near-minimax polynomial (relative error 9.5e-8 in
// exact arithmetic; 1.57e-7 at worst evaluated in float32, every float in [−4, 1]) instead of
// degree-6 Taylor (1.6e-7; 2.25e-7 evaluated):
// one FMA and one clamp fewer on the forward's per-score path, which at D = 32 is a quarter of
// its time. Double keeps vectorExp2 (unchanged bits).

/// 2^x per lane of a Float vector, for x ≤ 127 (see the contract above).
@_transparent @usableFromInline
func vectorExp2NonPositive(_ input: FloatVector) -> FloatVector {
    let x = input.replacing(with: -127, where: input .< -127)
    let (f, power) = exp2Split(x)
    // Relative-error fit of 2^f on [−1/2, 1/2] with p(0) = 1 (Lawson-reweighted least squares).
    var p = FloatVector(repeating: 0.0013276708814555262)
    p = Float.fma(p, f, FloatVector(repeating: 0.00967150902472904))
    p = Float.fma(p, f, FloatVector(repeating: 0.0555069251240595))
    p = Float.fma(p, f, FloatVector(repeating: 0.24022242172694827))
    p = Float.fma(p, f, FloatVector(repeating: 0.6931470088685641))
    p = Float.fma(p, f, FloatVector(repeating: 1))
    return p * power
}
