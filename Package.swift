// swift-tools-version:6.1
import PackageDescription

// Layering (docs/architecture.md): dependencies point down only.
//   StrataKit (the embedded API) -> StrataStreams -> StrataBroker
//   strata (CLI) -> StrataBroker -> StrataLog -> StrataCore, CCRC32C, CPlatform
//                                -> StrataMetadata -> StrataCore, CLMDB (Debian liblmdb-dev)
let package = Package(
    name: "Strata",
    platforms: [.macOS(.v15)],
    products: [
        // What an application embedding Strata imports: `import StrataKit` (docs/embedding.md).
        .library(name: "StrataKit", targets: ["StrataKit"]),
        .library(name: "StrataLog", targets: ["StrataLog"]),
        .library(name: "StrataMetadata", targets: ["StrataMetadata"]),
        .library(name: "StrataBroker", targets: ["StrataBroker"]),
        .library(name: "StrataStreams", targets: ["StrataStreams"]),
        .executable(name: "strata", targets: ["strata"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
    ],
    targets: [
        .target(name: "CCRC32C"),
        .target(name: "CPlatform"),
        .target(name: "CStrataScan"),
        .target(
            name: "CCompression",
            linkerSettings: [.linkedLibrary("z"), .linkedLibrary("snappy"), .linkedLibrary("lz4"), .linkedLibrary("zstd")]
        ),
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "StrataCore"),
        .target(
            name: "StrataLog",
            dependencies: [
                "CCRC32C", "CPlatform", "CCompression", "CStrataScan", "StrataCore",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(name: "StrataMetadata", dependencies: ["CLMDB", "StrataCore"]),
        .target(
            name: "StrataBroker",
            dependencies: [
                "StrataLog", "StrataMetadata", "StrataCore",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .target(name: "StrataStreams", dependencies: ["StrataBroker", "StrataMetadata", "StrataLog", "StrataCore"]),
        .target(name: "StrataKit", dependencies: ["StrataStreams", "StrataBroker", "StrataLog", "StrataCore"]),
        .executableTarget(name: "strata-embedded-bench", dependencies: ["StrataKit", "StrataCore"]),
        .executableTarget(name: "strata-streams-bench", dependencies: ["StrataStreams", "StrataBroker", "StrataLog", "StrataCore"]),
        // Parquet files (Thrift compact footer, dictionary/RLE/PLAIN pages, zstd): strata export.
        .target(name: "StrataParquet", dependencies: ["CCompression", "StrataCore"]),
        .target(name: "StrataQuery", dependencies: ["CSQLite", "CStrataScan", "StrataBroker", "StrataLog", "StrataCore", "StrataParquet"]),
        .target(
            name: "StrataKafka",
            dependencies: [
                "StrataBroker", "StrataLog", "StrataMetadata", "StrataCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
        // Operations: the HTTP listener (metrics, health, admin JSON) and the log format.
        .target(
            name: "StrataOps",
            dependencies: [
                "StrataBroker", "StrataLog", "StrataCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "strata",
            dependencies: [
                "StrataLog", "StrataBroker", "StrataMetadata", "StrataCore", "StrataKafka", "StrataQuery", "StrataStreams", "StrataOps", "CPlatform",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(
            name: "StrataLogTests",
            dependencies: ["StrataLog", "CPlatform", "StrataCore"]
        ),
        .testTarget(name: "StrataMetadataTests", dependencies: ["StrataMetadata"]),
        .testTarget(name: "StrataBrokerTests", dependencies: ["StrataBroker", "StrataLog", "StrataMetadata", "StrataCore"]),
        .testTarget(name: "StrataStreamsTests", dependencies: ["StrataStreams", "StrataBroker", "StrataLog", "StrataMetadata", "StrataCore"]),
        .testTarget(name: "StrataKitTests", dependencies: ["StrataKit", "StrataCore"]),
        .testTarget(name: "StrataParquetTests", dependencies: ["StrataParquet"]),
        .testTarget(name: "StrataColdTests", dependencies: ["StrataLog", "StrataCore"]),
        .testTarget(name: "StrataQueryTests", dependencies: ["StrataQuery", "StrataBroker", "StrataLog", "CStrataScan", "StrataParquet"]),
        .testTarget(
            name: "StrataKafkaTests",
            dependencies: [
                "StrataKafka", "StrataBroker", "StrataLog", "StrataCore", "StrataOps",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
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
    package.targets.append(
        .executableTarget(
            name: "QueryBench",
            dependencies: ["StrataLog", "StrataBroker", "CStrataScan", "CSQLite", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/QueryBench",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]))
}

// Fuzz targets (libFuzzer), added only when asked for: they are built with `--sanitize fuzzer
// --sanitize address` into their own scratch path by tools/fuzz.sh (`STRATA_FUZZ=1`), never by
// `swift build`/`swift test`. Sources under Fuzz/, seed corpora under Tests/FuzzCorpus/; see
// docs/fuzzing.md.
if Context.environment["STRATA_FUZZ"] != nil {
    package.targets.append(
        .executableTarget(
            name: "FuzzKafkaRequest",
            dependencies: [
                "StrataKafka", "StrataBroker", "StrataLog", "StrataCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Fuzz/KafkaRequest"))
    package.targets.append(
        .executableTarget(name: "FuzzSaslExchange", dependencies: ["StrataBroker", "StrataMetadata"], path: "Fuzz/SaslExchange",
                          exclude: ["fuzz.dict"]))
    package.targets.append(
        .executableTarget(name: "FuzzBatchAppend", dependencies: ["StrataLog", "StrataCore"], path: "Fuzz/BatchAppend",
                          exclude: ["fuzz.dict"]))
    package.targets.append(
        .executableTarget(name: "FuzzRecordDecode", dependencies: ["StrataLog", "CStrataScan"], path: "Fuzz/RecordDecode",
                          exclude: ["fuzz.dict"]))
    package.targets.append(
        .executableTarget(name: "FuzzSummaryDecode", dependencies: ["StrataQuery", "StrataLog"], path: "Fuzz/SummaryDecode"))
    package.targets.append(
        .executableTarget(name: "FuzzColdBlock", dependencies: ["StrataLog", "CStrataScan"], path: "Fuzz/ColdBlock"))
}
