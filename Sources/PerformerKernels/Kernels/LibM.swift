#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The C library's scalar double functions under one name on every platform. Kernel code
/// calls them qualified (`LibM.exp`) because KernelScalar's vector `exp2` and friends would
/// otherwise shadow them inside generic code.
@usableFromInline enum LibM {
    @inline(__always) @usableFromInline static func exp(_ x: Double) -> Double { libm_exp(x) }
    @inline(__always) @usableFromInline static func exp2(_ x: Double) -> Double { libm_exp2(x) }
    @inline(__always) @usableFromInline static func log2(_ x: Double) -> Double { libm_log2(x) }
    @inline(__always) @usableFromInline static func log(_ x: Double) -> Double { libm_log(x) }
}

// Module-level forwarders: here no member of LibM is in scope to shadow the C functions.
@inline(__always) @usableFromInline func libm_exp(_ x: Double) -> Double { exp(x) }
@inline(__always) @usableFromInline func libm_exp2(_ x: Double) -> Double { exp2(x) }
@inline(__always) @usableFromInline func libm_log2(_ x: Double) -> Double { log2(x) }
@inline(__always) @usableFromInline func libm_log(_ x: Double) -> Double { log(x) }
