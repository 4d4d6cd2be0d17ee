// swift-tools-version:6.1
import PackageDescription

// Depends on Strata by relative path (this repository). From another project, by URL:
//   .package(url: "https://github.com/<owner>/strata", branch: "main")
// and the same `.product(name: "StrataKit", package: "strata")`. See docs/embedding.md.
let package = Package(
    name: "OrderEnricher",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "order-enricher", targets: ["OrderEnricher"])],
    dependencies: [.package(name: "Strata", path: "../..")],
    targets: [
        .executableTarget(
            name: "OrderEnricher",
            dependencies: [.product(name: "StrataKit", package: "Strata")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
