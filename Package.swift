// swift-tools-version:6.1
import PackageDescription

/// Release builds drop Swift's dynamic exclusivity checks on our own targets: they showed up
/// as ~3% of the proxy's CPU (swift_beginAccess) in `perf` under h2load.
let performance: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "insight",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "insight-sidecar", targets: ["insight-sidecar"]),
        .library(name: "H2Proxy", targets: ["H2Proxy"]),
        .library(name: "Sidecar", targets: ["Sidecar"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-http-structured-headers.git", from: "1.7.0"),
        // Span export (OTLP/HTTP, Docs/architecture.md says why it is the sidecar's own code),
        // Consul's API and `diagnose`.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "COpenSSLShims",
            dependencies: ["COpenSSL"]
        ),
        .target(
            name: "H2Proxy",
            dependencies: [
                "CNGHTTP2",
                "COpenSSL",
                "COpenSSLShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                "Metrics",
            ],
            swiftSettings: performance
        ),
        .target(
            name: "Metrics",
            dependencies: [
                .product(name: "Atomics", package: "swift-atomics")
            ],
            swiftSettings: performance
        ),
        .target(
            name: "Sidecar",
            dependencies: [
                "H2Proxy",
                "Metrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "RawStructuredFieldValues", package: "swift-http-structured-headers"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: performance
        ),
        .executableTarget(
            name: "insight-sidecar",
            dependencies: ["Sidecar"]
        ),
        .testTarget(
            name: "H2ProxyTests",
            dependencies: [
                "H2Proxy",
                "Metrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "MetricsTests",
            dependencies: ["Metrics"]
        ),
        .testTarget(
            name: "SidecarTests",
            dependencies: ["Sidecar", "Metrics"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
