// swift-tools-version:6.0
// Fuzz targets for Insight (issue 8). Built and run by ./run.sh:
//   swift build -c release -Xswiftc -sanitize=fuzzer -Xswiftc -enable-testing -Xswiftc -use-ld=lld \
//       --scratch-path .build-fuzz
// `-enable-testing` lets FuzzTimingHeaders reach the internal TimingHeaders parser
// through `@testable import Sidecar`, and FuzzBridge the proxy's connections through
// `@testable import H2Proxy`.
import PackageDescription

// SwiftPM renames each executable's entry point and links `main` to it, so libFuzzer's own
// `main` is not used: each main.swift hands its callback to LLVMFuzzerRunDriver (CFuzzDriver).
let fuzzFlags: [SwiftSetting] = []

let package = Package(
    name: "InsightFuzz",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "main", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-structured-headers.git", from: "1.7.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(name: "CFuzzDriver"),
        .executableTarget(
            name: "FuzzTimingHeaders",
            dependencies: [
                "CFuzzDriver",
                .product(name: "Sidecar", package: "main"),
                .product(name: "H2Proxy", package: "main"),
                .product(name: "RawStructuredFieldValues", package: "swift-http-structured-headers"),
            ],
            swiftSettings: fuzzFlags
        ),
        .executableTarget(
            name: "FuzzConfig",
            dependencies: ["CFuzzDriver", .product(name: "Sidecar", package: "main")],
            swiftSettings: fuzzFlags
        ),
        .executableTarget(
            name: "FuzzH2Session",
            dependencies: [
                "CFuzzDriver",
                .product(name: "H2Proxy", package: "main"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: fuzzFlags
        ),
        // The whole stream bridge on EmbeddedChannels (`@testable import H2Proxy`; it also
        // imports the CNGHTTP2 and Metrics modules H2Proxy brings along).
        .executableTarget(
            name: "FuzzBridge",
            dependencies: [
                "CFuzzDriver",
                .product(name: "H2Proxy", package: "main"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: fuzzFlags
        ),
    ],
    swiftLanguageModes: [.v5]
)
