import ArgumentParser
import Foundation

/// Flags shared by `run` and `check-config`; each overrides the YAML key of the same name.
public struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "YAML config file; flags override its values.")
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

    @Option(name: .long, help: "Event loop threads, 0 = one per core. YAML: event_loops.")
    var eventLoops: Int?

    @Option(name: .long, help: "How long in-flight streams may finish after SIGTERM, e.g. 30s. YAML: drain_timeout.")
    var drainTimeout: String?

    @Option(name: .long, help: "Upstream TCP connect timeout, e.g. 5s. YAML: connect_timeout.")
    var connectTimeout: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical. YAML: log_level.")
    var logLevel: String?

    @Flag(
        name: .long,
        help: "Remove insight-* request headers before the upstream sees them. YAML: strip_request_headers.")
    var stripRequestHeaders = false

    @Flag(
        name: .long,
        help: "Remove insight-timing and insight-chain before the client sees them. YAML: strip_response_timing.")
    var stripResponseTiming = false

    @Flag(name: .long, help: "Forward only: no timing headers, no hop metrics (for comparison). YAML: timing: false.")
    var noTiming = false

    @Flag(name: .long, help: "Answer insight.probe.v1.Probe/Echo here instead of forwarding it. YAML: receiver.")
    var receiver = false

    @Option(name: .long, help: "Stop appending to insight-hops at this many entries (default 16). YAML: hop_limit.")
    var hopLimit: Int?

    @Option(name: .long, help: "One JSON line per stream to stdout, stderr or a file. YAML: access_log. Default off.")
    var accessLog: String?

    public init() {}

    /// The file's settings with the flags applied on top, validated.
    func resolve() throws(ConfigError) -> SidecarConfig {
        var c = SidecarConfig()
        if let path = self.config {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ConfigError(field: "config", reason: "cannot read \(path): \(error.localizedDescription)")
            }
            c = try SidecarConfig.load(yaml: text)
        }
        if let v = self.listen { c.listen = try HostPort(parsing: v, field: "listen") }
        if let v = self.upstream { c.upstream = try HostPort(parsing: v, field: "upstream") }
        if let v = self.hop { c.hop = v }
        if let v = self.region { c.region = v }
        if let v = self.admin { c.admin = try HostPort(parsing: v, field: "admin") }
        if let v = self.eventLoops { c.eventLoops = v }
        if let v = self.drainTimeout { c.drainTimeout = try DurationValue.parse(v, field: "drain_timeout") }
        if let v = self.connectTimeout { c.connectTimeout = try DurationValue.parse(v, field: "connect_timeout") }
        if let v = self.logLevel { c.logLevel = try parseLogLevel(v, field: "log_level") }
        if self.noTiming { c.timing = false }
        if self.receiver { c.receiver = true }
        if self.stripRequestHeaders { c.stripRequestHeaders = true }
        if self.stripResponseTiming { c.stripResponseTiming = true }
        if let v = self.hopLimit { c.hopLimit = v }
        if let v = self.accessLog { c.accessLog = v }
        return try c.validated()
    }
}
