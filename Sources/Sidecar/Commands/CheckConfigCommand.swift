import ArgumentParser

public struct CheckConfigCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration (file and flags) and print it; start nothing.")

    @OptionGroup var options: ConfigOptions

    public init() {}

    public func run() async throws {
        let c = try self.options.resolve()
        _ = try c.makeTLSContexts()
        for warning in c.warnings { print("warning: \(warning)") }
        for warning in CertificateExpiry(config: c).warnings() { print("warning: \(warning)") }
        print("configuration ok")
        print("listen: \(c.listen)")
        print("upstream: \(c.upstream.map { "\($0)" } ?? "-")")
        print("hop: \(c.hop ?? "-")")
        print("region: \(c.region ?? "-")")
        print("admin: \(c.admin)")
        print("admin_idle_timeout: \(DurationValue.format(c.adminIdleTimeout))")
        print("event_loops: \(c.eventLoops)")
        print("drain_timeout: \(DurationValue.format(c.drainTimeout))")
        print("connect_timeout: \(DurationValue.format(c.connectTimeout))")
        print("tls: \(c.tls.map { "cert \($0.cert ?? "-"), client_ca \($0.clientCA ?? "-")" } ?? "off (h2c)")")
        print("upstream_tls: \(c.upstreamTLS.map { "ca \($0.ca ?? "system"), cert \($0.cert ?? "-")" } ?? "off (h2c)")")
        let t = c.tracing
        print(
            "tracing: "
                + (t.isEnabled
                    ? "\(t.tracesURL), sample_ratio \(t.sampleRatio), service_name \(t.serviceName), "
                        + "\(t.headers.count) header(s)" : "off"))
        print("server_timing: \(c.serverTiming ? "on" : "off")")
    }
}
