// swift-tools-version:6.2
// A package that depends on libperformer the way a user's package does and calls PerformerCore
// (Tests/swift-consumer/run.sh builds and runs it). The dependency is
//   by path (default): the repository two directories up, or PERFORMER_PACKAGE_PATH;
//   by URL and version: PERFORMER_PACKAGE_URL (e.g. file:///tmp/x/libperformer, a git
//   repository with the tag PERFORMER_PACKAGE_VERSION, default 0.2.0).
// SwiftPM names a dependency after the last component of its path or URL, so both must end
// in "libperformer" (run.sh links or clones the repository under that name).
import PackageDescription

let environment = Context.environment
let dependency: Package.Dependency
if let url = environment["PERFORMER_PACKAGE_URL"] {
    dependency = .package(url: url, from: Version(environment["PERFORMER_PACKAGE_VERSION"] ?? "0.2.0")!)
} else {
    dependency = .package(path: environment["PERFORMER_PACKAGE_PATH"] ?? "../..")
}

let package = Package(
    name: "performer-consumer",
    dependencies: [dependency],
    targets: [
        .executableTarget(
            name: "PerformerConsumer",
            dependencies: [.product(name: "PerformerCore", package: "libperformer")]),
    ],
    swiftLanguageModes: [.v6]
)
