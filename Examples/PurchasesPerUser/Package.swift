// swift-tools-version:6.1
import PackageDescription

// Depends on Strata by relative path (this repository). From another project, by URL:
//   .package(url: "https://github.com/<owner>/strata", branch: "main")
// and the same `.product(name: "StrataKit", package: "strata")`. See docs/embedding.md.
let package = Package(
    name: "PurchasesPerUser",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "purchases-per-user", targets: ["PurchasesPerUser"])],
    dependencies: [.package(name: "Strata", path: "../..")],
    targets: [
        .executableTarget(
            name: "PurchasesPerUser",
            dependencies: [.product(name: "StrataKit", package: "Strata")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
