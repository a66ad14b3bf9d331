import Metrics

/// What `--version` prints and `insight_build_info` exports.
///
/// SwiftPM cannot stamp a value in at build time, so the revision is a constant here:
/// `unknown` in a plain `swift build`; a release build rewrites it first (see README,
/// "Version"): `sed -i "s/revision = \"unknown\"/revision = \"$(git rev-parse --short HEAD)\"/"`.
public enum BuildInfo {
    /// The release this source tree is (semantic version).
    public static let version = "0.9.0"
    /// The git commit the binary was built from, or `unknown`.
    public static let revision = "unknown"

    /// `insight-sidecar --version`: `0.9.0 (revision unknown)`.
    static var versionLine: String { "\(Self.version) (revision \(Self.revision))" }

    /// Exports `insight_build_info{version,revision} 1` (the Prometheus convention for build metadata).
    static func register(in registry: MetricsRegistry) {
        registry.gauge(
            "insight_build_info", help: "Always 1; the labels name the running build.",
            labels: [("version", Self.version), ("revision", Self.revision)]
        ).set(1)
    }
}
