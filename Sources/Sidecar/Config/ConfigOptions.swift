import ArgumentParser
import Foundation

/// Flags shared by `run` and `check-config`; each overrides the YAML key of the same name.
public struct ConfigOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "YAML config file; flags override its values. Some keys exist only there: max_routes, limits, probes, tls, upstream_tls, tracing (Docs/configuration.md). Default none."
    )
    var config: String?

    @Option(name: .long, help: "Client listener, HOST:PORT (h2c). YAML: listen. Default 0.0.0.0:8080.")
    var listen: String?

    @Option(name: .long, help: "The hop this sidecar fronts, HOST:PORT (h2c). YAML: upstream. Required.")
    var upstream: String?

    @Option(name: .long, help: "Name of the hop this sidecar fronts, e.g. mediary-a. YAML: hop. Required.")
    var hop: String?

    @Option(name: .long, help: "Region this sidecar runs in. YAML: region. Required.")
    var region: String?

    @Option(
        name: .long,
        help: "Admin listener for /healthz, /readyz, /metrics, HOST:PORT. YAML: admin. Default 127.0.0.1:9901.")
    var admin: String?

    @Option(
        name: .long, parsing: .unconditional,
        help:
            "Close an admin connection after this long without a complete request or a response taken, more than 0. YAML: admin_idle_timeout. Default 30s."
    )
    var adminIdleTimeout: String?

    // `.unconditional` so that `--event-loops -1` reaches validation ("must be 0 … to 256, got -1")
    // instead of reading as a missing value followed by an unknown flag.
    @Option(
        name: .long, parsing: .unconditional,
        help: "Event loop threads, 0 = one per core, at most 256. YAML: event_loops. Default 0.")
    var eventLoops: Int?

    @Option(name: .long, help: "How long in-flight streams may finish after SIGTERM. YAML: drain_timeout. Default 30s.")
    var drainTimeout: String?

    @Option(
        name: .long, parsing: .unconditional,
        help: "Upstream TCP connect timeout, more than 0. YAML: connect_timeout. Default 5s.")
    var connectTimeout: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical. YAML: log_level. Default info.")
    var logLevel: String?

    @Flag(
        name: .long,
        help:
            "Remove insight-* request headers before the upstream sees them. YAML: strip_request_headers. Default off.")
    var stripRequestHeaders = false

    @Flag(
        name: .long,
        help:
            "Remove insight-timing and insight-chain before the client sees them. YAML: strip_response_timing. Default off."
    )
    var stripResponseTiming = false

    @Flag(
        name: .long,
        help:
            "Forward only: no timing headers, no hop metrics (for comparison). YAML: timing: false. Default off (timing on)."
    )
    var noTiming = false

    @Flag(
        name: .long,
        help: "Answer insight.probe.v1.Probe/Echo here instead of forwarding it. YAML: receiver. Default off.")
    var receiver = false

    @Option(
        name: .long, parsing: .unconditional,
        help: "Stop appending to insight-hops at this many entries, 1-64. YAML: hop_limit. Default 16.")
    var hopLimit: Int?

    @Option(name: .long, help: "One JSON line per stream to stdout, stderr or a file. YAML: access_log. Default off.")
    var accessLog: String?

    @OptionGroup var tracing: TracingFlags

    public init() {}

    /// The file's settings with the flags applied on top, validated.
    func resolve() throws(ConfigError) -> SidecarConfig {
        var c = SidecarConfig()
        if let path = self.config {
            c = try SidecarConfig.load(yaml: try Self.readConfigFile(path))
        }
        if let v = self.listen { c.listen = try HostPort(parsing: v, field: "listen") }
        if let v = self.upstream { c.upstream = try HostPort(parsing: v, field: "upstream") }
        if let v = self.hop { c.hop = v }
        if let v = self.region { c.region = v }
        if let v = self.admin { c.admin = try HostPort(parsing: v, field: "admin") }
        if let v = self.adminIdleTimeout {
            c.adminIdleTimeout = try SidecarConfig.connectTimeout(v, field: "admin_idle_timeout")
        }
        if let v = self.eventLoops { c.eventLoops = v }
        if let v = self.drainTimeout { c.drainTimeout = try DurationValue.parse(v, field: "drain_timeout") }
        if let v = self.connectTimeout {
            c.connectTimeout = try SidecarConfig.connectTimeout(v, field: "connect_timeout")
        }
        if let v = self.logLevel { c.logLevel = try parseLogLevel(v, field: "log_level") }
        if self.noTiming { c.timing = false }
        if self.receiver { c.receiver = true }
        if self.stripRequestHeaders { c.stripRequestHeaders = true }
        if self.stripResponseTiming { c.stripResponseTiming = true }
        if let v = self.hopLimit { c.hopLimit = v }
        if let v = self.accessLog { c.accessLog = v }
        try self.tracing.apply(to: &c)
        return try c.validated()
    }

    /// The config file's text; failures name the path and the cause in plain words.
    static func readConfigFile(_ path: String) throws(ConfigError) -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConfigError(field: "config", reason: "cannot read \(path): no such file")
        }
        if isDirectory.boolValue {
            throw ConfigError(field: "config", reason: "cannot read \(path): it is a directory, not a file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            let cause = access(path, R_OK) == 0 ? "read failed" : String(cString: strerror(errno))
            throw ConfigError(field: "config", reason: "cannot read \(path): \(cause)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(field: "config", reason: "cannot read \(path): not UTF-8 text")
        }
        return text
    }
}
