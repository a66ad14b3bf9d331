import ArgumentParser

/// The `--tracing-*` and `--server-timing` flags of `run` and `check-config`; each overrides
/// the YAML key it names.
struct TracingFlags: ParsableArguments {
    @Option(
        name: .long,
        help: "OTLP/HTTP collector URL; spans go to <URL>/v1/traces. YAML: tracing.otlp_endpoint. Default none (off).")
    var tracingOtlpEndpoint: String?

    @Option(
        name: .long, parsing: .unconditional,
        help: "Share of new traces that get spans, 0-1. YAML: tracing.sample_ratio. Default 1.")
    var tracingSampleRatio: String?

    @Option(
        name: .long,
        help: "NAME=VALUE header on every span export (repeatable). YAML: tracing.headers. Default none.")
    var tracingHeader: [String] = []

    @Option(name: .long, help: "service.name of the spans. YAML: tracing.service_name. Default insight-sidecar.")
    var tracingServiceName: String?

    @Flag(
        name: .long,
        help: "Append insight-<hop>;dur=<ms>;desc=\"<region>\" to server-timing. YAML: server_timing. Default off.")
    var serverTiming = false

    func apply(to c: inout SidecarConfig) throws(ConfigError) {
        if let v = self.tracingOtlpEndpoint { c.tracing.otlpEndpoint = v }
        if let v = self.tracingSampleRatio {
            c.tracing.sampleRatio = try TracingOptions.ratio(v, field: "tracing.sample_ratio")
        }
        if !self.tracingHeader.isEmpty {
            c.tracing.headers = []
            for h in self.tracingHeader { c.tracing.headers.append(try TracingOptions.header(h)) }
        }
        if let v = self.tracingServiceName { c.tracing.serviceName = v }
        if self.serverTiming { c.serverTiming = true }
    }
}
