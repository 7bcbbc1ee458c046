// Vector 2^x, the exponential every kernel uses (softmax probabilities, FAVOR+ features).
//
// Contract, per lane: x is clamped to [−bias, bias + 1] (bias = 127 for Float, 1023 for
// Double); x = n + f with n = round(x), |f| ≤ 1/2; 2^f by its Taylor polynomial in f·ln 2
// (degree 6 for Float: relative error < 1.3e-7; degree 12 for Double: < 2e-16), times 2^n
// built in the exponent bits. Consequences callers rely on: exactly 0 for x = −inf and for
// x ≤ −bias − 1/2 (results below the smallest normal flush to 0, never denormal); +inf for
// x ≥ bias + 1/2; no NaN for non-NaN input. Use exp(y) = exp2(y · log2 e).

/// 2^x for each lane of a Float vector (see the contract above).
@_transparent @usableFromInline
func vectorExp2(_ input: FloatVector) -> FloatVector {
    var x = input.replacing(with: -127, where: input .< -127)
    x = x.replacing(with: 128, where: x .> 128)
    let (f, power) = exp2Split(x)
    var p = FloatVector(repeating: 0.00015403530393381606)
    p = Float.fma(p, f, FloatVector(repeating: 0.0013333558146428441))
    p = Float.fma(p, f, FloatVector(repeating: 0.009618129107628477))
    p = Float.fma(p, f, FloatVector(repeating: 0.055504108664821576))
    p = Float.fma(p, f, FloatVector(repeating: 0.2402265069591007))
    p = Float.fma(p, f, FloatVector(repeating: 0.6931471805599453))
    p = Float.fma(p, f, FloatVector(repeating: 1))
    return p * power
}

/// x = n + f with n = round(x), |f| ≤ 1/2, for x in [−127, 128]: (f, 2^n built in the exponent bits).
/// Shared by vectorExp2 and vectorExp2NonPositive, which differ in clamping and polynomial.
@_transparent @usableFromInline
func exp2Split(_ x: FloatVector) -> (fraction: FloatVector, power: FloatVector) {
    // Adding 1.5·2^23 rounds to an integer and leaves n in the low mantissa bits.
    let magic = FloatVector(repeating: 12_582_912)
    let t = x + magic
    let exponent = (unsafeBitCast(t, to: FloatBits.self) &<< 23) &+ FloatBits(repeating: 127 << 23)
    return (x - (t - magic), unsafeBitCast(exponent, to: FloatVector.self))
}

/// 2^x for each lane of a Double vector (see the contract above).
@_transparent @usableFromInline
func vectorExp2(_ input: DoubleVector) -> DoubleVector {
    var x = input.replacing(with: -1023, where: input .< -1023)
    x = x.replacing(with: 1024, where: x .> 1024)
    let magic = DoubleVector(repeating: 6_755_399_441_055_744)  // 1.5·2^52
    let t = x + magic
    let f = x - (t - magic)
    let coefficients: (Double, Double, Double, Double, Double, Double, Double, Double, Double, Double, Double) = (
        2.5678435993488196e-11, 4.44553827187081e-10, 7.054911620801121e-09, 1.0178086009239696e-07,
        1.3215486790144305e-06, 1.5252733804059838e-05, 0.00015403530393381606, 0.0013333558146428441,
        0.009618129107628477, 0.055504108664821576, 0.2402265069591007)
    var p = DoubleVector(repeating: coefficients.0)
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.1))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.2))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.3))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.4))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.5))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.6))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.7))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.8))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.9))
    p = Double.fma(p, f, DoubleVector(repeating: coefficients.10))
    p = Double.fma(p, f, DoubleVector(repeating: 0.6931471805599453))
    p = Double.fma(p, f, DoubleVector(repeating: 1))
    let exponent = (unsafeBitCast(t, to: DoubleBits.self) &<< 52) &+ DoubleBits(repeating: 1023 << 52)
    return p * unsafeBitCast(exponent, to: DoubleVector.self)
}
