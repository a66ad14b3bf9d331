import Foundation

/// Where and how the sidecar sends its spans (`tracing:` in the YAML, `--tracing-*` flags).
///
/// Off unless `otlpEndpoint` is set: then every forwarded stream of a sampled trace becomes
/// one span, exported over OTLP/HTTP (protobuf) to `<otlpEndpoint>/v1/traces`.
public struct TracingOptions: Sendable, Equatable {
    /// The collector's OTLP/HTTP base URL, e.g. `http://tempo:4318`; empty: tracing off.
    public var otlpEndpoint = ""
    /// The share of new traces (calls without a valid `traceparent`) that get spans, 0...1.
    /// A caller's `traceparent` decides by its own `sampled` flag.
    public var sampleRatio = 1.0
    /// Extra HTTP headers on every export request (an API key for a hosted collector, say).
    public var headers: [HeaderPair] = []
    /// The `service.name` resource attribute of the spans.
    public var serviceName = "insight-sidecar"
    /// Spans waiting for export; past this they are dropped and counted (`queue_full`).
    public var maxQueuedSpans = 2048

    public init() {}

    public var isEnabled: Bool { !self.otlpEndpoint.isEmpty }

    /// The URL spans are posted to: the endpoint with `/v1/traces` appended, as the OTLP
    /// exporter specification does with `OTEL_EXPORTER_OTLP_ENDPOINT`.
    public var tracesURL: String {
        if self.otlpEndpoint.hasSuffix("/v1/traces") { return self.otlpEndpoint }
        return (self.otlpEndpoint.hasSuffix("/") ? String(self.otlpEndpoint.dropLast()) : self.otlpEndpoint)
            + "/v1/traces"
    }

    /// Throws naming the first bad field (`tracing.<key>`).
    func validate() throws(ConfigError) {
        if !(0...1).contains(self.sampleRatio) || self.sampleRatio.isNaN {
            throw ConfigError(field: "tracing.sample_ratio", reason: "must be between 0 and 1, got \(self.sampleRatio)")
        }
        if self.isEnabled {
            let e = self.otlpEndpoint
            guard e.hasPrefix("http://") || e.hasPrefix("https://"), e.count > "https://".count,
                !e.contains(" "), let url = URLComponents(string: e), let host = url.host, !host.isEmpty
            else {
                throw ConfigError(
                    field: "tracing.otlp_endpoint",
                    reason: "must be an http:// or https:// URL such as http://127.0.0.1:4318, got \"\(e)\"")
            }
            if url.user != nil || url.password != nil {
                // They would be logged with the endpoint; a header is where credentials go.
                throw ConfigError(
                    field: "tracing.otlp_endpoint",
                    reason: "must not carry credentials (user:password@): put them in tracing.headers, "
                        + "e.g. authorization")
            }
            if let port = url.port, !(1...65535).contains(port) {
                throw ConfigError(field: "tracing.otlp_endpoint", reason: "port must be 1 to 65535, got \(port)")
            }
        }
        for h in self.headers {
            let tokenOK =
                !h.name.isEmpty
                && h.name.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
                        || "!#$%&'*+-.^_`|~".utf8.contains(c)
                }
            if !tokenOK {
                throw ConfigError(field: "tracing.headers", reason: "\"\(h.name)\" is not a valid header name")
            }
            if h.value.utf8.contains(where: { $0 == 0x0a || $0 == 0x0d || $0 == 0 }) {
                throw ConfigError(field: "tracing.headers.\(h.name)", reason: "must not contain line breaks")
            }
        }
        if self.serviceName.isEmpty || self.serviceName.count > 128 {
            throw ConfigError(field: "tracing.service_name", reason: "must be 1-128 characters")
        }
        try SidecarConfig.range(self.maxQueuedSpans, 16...1_000_000, "tracing.max_queued_spans")
    }
}
