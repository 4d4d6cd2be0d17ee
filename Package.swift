// swift-tools-version:6.1
import PackageDescription

// Layering (docs/architecture.md): dependencies point down only.
//   strata (CLI) -> StrataLog -> CCRC32C, CPlatform, SystemPackage
let package = Package(
    name: "Strata",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "StrataLog", targets: ["StrataLog"]),
        .executable(name: "strata", targets: ["strata"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(name: "CCRC32C"),
        .target(name: "CPlatform"),
        .target(
            name: "StrataLog",
            dependencies: [
                "CCRC32C", "CPlatform",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "strata",
            dependencies: [
                "StrataLog",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "StrataLogTests",
            dependencies: ["StrataLog", "CPlatform"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// Benchmarks (package-benchmark) are added only when asked for, so that building and testing do
// not pull in the benchmark plugin: `STRATA_BENCHMARKS=1 swift package benchmark --no-progress`.
if Context.environment["STRATA_BENCHMARKS"] != nil {
    package.dependencies.append(
        // MallocInterposer only: the default RuntimeInterposer trait needs a package not mirrored here.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]))
    package.targets.append(
        .executableTarget(
            name: "LogBench",
            dependencies: ["StrataLog", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/LogBench",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]))
}
