// swift-tools-version:6.2
// SPDX-License-Identifier: Apache-2.0
//
// Tools version 6.2: the code needs Swift 6 (typed throws), and from 6.2 on SwiftPM lets other
// packages depend on this one by version although the kernel targets use unsafeFlags
// (-march, -Ounchecked); packages declaring an older tools version may not (docs/INSTALL.md).
//
// libperformer: exact softmax attention, linear attention and FAVOR+ behind one C ABI.
//
// Module map (see docs/ARCHITECTURE.md):
//   CPerformerSupport        tiny C: CPU feature detection, atomics, thread-local error text
//   CPerformerGlibcCompat    C, libperformer.so only: old glibc symbol versions (docs/INSTALL.md)
//   PerformerKernelInterface the kernel table type and the task descriptors the kernels read
//   CPerformerKernelIntrinsics tiny C, inline only: prefetch, streaming stores, shuffles
//   PerformerKernels         all dense compute (micro-kernels, exp, attention blocks), portable build
//   PerformerKernelsAVX2     the same sources (a symlink), built for x86-64-v3 (AVX2 + FMA)
//   PerformerKernelsAVX512   the same sources (a symlink), built for x86-64-v4 (AVX-512)
//   PerformerCore            public Swift API: tensors, validation, threads, orchestration
//   Performer                the C ABI (@_cdecl only) -> libperformer.so, Swift runtime linked in
//
// Swift fixes the vector ISA per module, not per function, so run-time dispatch means
// compiling the kernel sources once per ISA and choosing a table at first use.
import PackageDescription

let packageRoot = Context.packageDirectory

/// Release-only optimization for the kernel copies; debug builds keep plain flags
/// (whole-module flags in debug break `swift test`).
/// The x86-64 copies get their -march only on an x86-64 host (the manifest runs on the host);
/// elsewhere they build as portable code that the CPU check never selects.
func kernelSettings(march: String?, define: String?) -> [SwiftSetting] {
    var settings: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]
    #if arch(x86_64)
    if let march { settings.append(.unsafeFlags(["-Xcc", "-march=\(march)"])) }
    #endif
    if let define { settings.append(.define(define)) }
    return settings
}

/// On x86-64 Linux the C library also lists libpthread.so.0 and libdl.so.2 as needed: on glibc
/// older than 2.34 the old pthread_* and dl* versions that CPerformerGlibcCompat binds live
/// there (on newer ones they are empty stubs). See Sources/CPerformerGlibcCompat/glibc_compat.c.
var oldGlibcLinkerFlags: [String] {
    #if os(Linux) && arch(x86_64)
    return ["--push-state", "--no-as-needed", "-l:libpthread.so.0", "-l:libdl.so.2", "--pop-state"]
        .flatMap { ["-Xlinker", $0] }
    #else
    return []
    #endif
}

/// The ThreadSanitizer build (Tests/sanitizers/build.sh thread, in its own scratch directory,
/// sets PERFORMER_TSAN_TESTS=1) runs two test classes: it compiles only them and the support
/// they use, not the whole test target (most of that build's time otherwise), named as the
/// target's sources there (nil elsewhere: every file). A fixed list, not a listing of the
/// directory with the rest excluded: SwiftPM caches a manifest's result across checkouts, and a
/// cached exclusion list missed test files added since (CI compiled them without their support).
var threadSanitizerTestSources: [String]? {
    guard Context.environment["PERFORMER_TSAN_TESTS"] == "1" else { return nil }
    let support = ["SoftmaxHarness", "SoftmaxReference", "DenseTensor", "SplitMix64", "StridedBuffer"]
    return ["SoftmaxConcurrencyTests.swift", "ThreadPoolTests.swift"] + support.map { "Support/\($0).swift" }
}

let package = Package(
    name: "libperformer",
    // Linux needs no entry. Apple platforms are untested (no such host in CI): minimums only.
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "performer", type: .dynamic, targets: ["Performer"]),
        .library(name: "PerformerCore", targets: ["PerformerCore"]),
    ],
    targets: [
        .target(name: "CPerformerSupport"),
        // include/performer.h as a Clang module, so the C ABI is written against the header's types.
        .target(name: "CPerformerABI"),
        // Old glibc/libstdc++ symbol versions for libperformer.so only (manylinux_2_31).
        .target(name: "CPerformerGlibcCompat"),
        .target(name: "PerformerKernelInterface"),
        // Prefetch, streaming stores and shuffles for the kernels (inline C: Swift has none of them).
        .target(name: "CPerformerKernelIntrinsics"),
        .target(
            name: "PerformerKernels",
            dependencies: ["PerformerKernelInterface", "CPerformerKernelIntrinsics"],
            swiftSettings: kernelSettings(march: nil, define: "PERFORMER_ISA_PORTABLE")),
        .target(
            name: "PerformerKernelsAVX2",
            dependencies: ["PerformerKernelInterface", "CPerformerKernelIntrinsics"],
            swiftSettings: kernelSettings(march: "x86-64-v3", define: "PERFORMER_ISA_AVX2")),
        .target(
            name: "PerformerKernelsAVX512",
            dependencies: ["PerformerKernelInterface", "CPerformerKernelIntrinsics"],
            swiftSettings: kernelSettings(march: "x86-64-v4", define: "PERFORMER_ISA_AVX512")),
        .target(
            name: "PerformerCore",
            dependencies: [
                "CPerformerSupport", "PerformerKernelInterface",
                "PerformerKernels", "PerformerKernelsAVX2", "PerformerKernelsAVX512",
            ]),
        .target(
            name: "Performer",
            dependencies: ["PerformerCore", "CPerformerSupport", "CPerformerABI", "CPerformerGlibcCompat"],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags([
                    // Swift runtime linked in: the .so loads where no toolchain is installed.
                    "-static-stdlib",
                    // lld, not the default gold: gold copies the Swift metadata symbols that the
                    // Performer module reaches through the GOT into .dynsym (as LOCAL entries,
                    // R_X86_64_GLOB_DAT) even though the version script hides them; lld resolves
                    // them locally, so .dynsym holds performer_* only (Tests/c/run.sh checks).
                    "-use-ld=lld",
                    // Export performer_* only.
                    "-Xlinker", "--version-script=\(packageRoot)/Sources/Performer/exports.map",
                    // A missing symbol is a link error, not a dlopen failure.
                    "-Xlinker", "-z", "-Xlinker", "defs",
                    // The thread pool's workers live for the process: dlclose must not unmap their code.
                    "-Xlinker", "-z", "-Xlinker", "nodelete",
                ] + oldGlibcLinkerFlags),
            ]),
        .executableTarget(
            name: "SwiftExample",
            dependencies: ["PerformerCore"],
            path: "examples/swift"),
        .executableTarget(
            name: "PerformerBench",
            dependencies: ["PerformerCore"],
            path: "benchmarks/swift"),
        .testTarget(
            name: "PerformerCoreTests",
            dependencies: ["PerformerCore"],
            sources: threadSanitizerTestSources),
    ],
    // Swift 6 compiler, Swift 5 language mode: what the sources were written and tested in.
    swiftLanguageModes: [.v5]
)
