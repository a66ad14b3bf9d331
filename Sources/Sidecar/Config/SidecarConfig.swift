import H2Proxy
import Logging
import Metrics
import NIOCore

/// The sidecar's validated settings: from the YAML file, then overridden by flags.
///
/// Every field and its YAML key is documented in `Docs/configuration.md`.
public struct SidecarConfig: Sendable, Equatable {
    public var listen = HostPort(host: "0.0.0.0", port: 8080)
    public var upstream: HostPort?
    public var hop: String?
    public var region: String?
    public var admin = HostPort(host: "127.0.0.1", port: 9901)
    /// How long an admin connection may go without a complete request or a response taken by the
    /// client before it is closed.
    public var adminIdleTimeout: TimeAmount = .seconds(30)
    /// Event loops (threads); 0 means one per core.
    public var eventLoops = 0
    public var drainTimeout: TimeAmount = .seconds(30)
    public var connectTimeout: TimeAmount = .seconds(5)
    public var logLevel: Logger.Level = .info
    public var limits = Limits()
    /// Take part in the timing protocol and record hop metrics (off: the bare proxy).
    public var timing = true
    /// Stop appending to `insight-hops` at this many entries.
    public var hopLimit = 16
    /// Remove `insight-*` request headers before the upstream sees them.
    public var stripRequestHeaders = false
    /// Remove `insight-timing`/`insight-chain` before the client sees them.
    public var stripResponseTiming = false
    /// Distinct service/method pairs with their own metric series; the rest are `other`.
    /// Also sets the series budget: `max_routes` × `TrafficMetrics.seriesBytesPerRoute` (7,400)
    /// bytes of `/metrics` for series labelled from the network, past which new label sets are
    /// recorded as `other` (Docs/metrics.md, "Series per route"); the default keeps every
    /// scrape under 1 MB.
    public var maxRoutes = SidecarConfig.defaultMaxRoutes
    /// The default `max_routes`.
    public static let defaultMaxRoutes = 128
    /// The largest `max_routes` accepted: a series budget of about 7.6 MB.
    public static let maxRoutesLimit = 1024
    /// Access log destination: nil (off), `stdout`, `stderr` or a file path.
    public var accessLog: String?
    /// Synthetic probes (`probes:`).
    public var probes = ProbeConfig()
    /// Answer `insight.probe.v1.Probe/Echo` here instead of forwarding it.
    public var receiver = false
    /// TLS towards clients (`tls:`); nil: h2c.
    public var tls: ServerTLS?
    /// TLS towards the upstream hop (`upstream_tls:`); nil: h2c.
    public var upstreamTLS: ClientTLS?
    /// Spans over OTLP/HTTP (`tracing:`); off unless `tracing.otlp_endpoint` is set.
    public var tracing = TracingOptions()
    /// Append `insight-<hop>;dur=…;desc="<region>"` to the response's `server-timing`.
    public var serverTiming = false

    public struct Limits: Sendable, Equatable {
        public var maxConcurrentStreams = 100
        public var maxHeaderListSize = 65536
        public var initialWindowSize = 1 << 20
        public var connectionWindowSize = Int(Int32.max)
        public var maxUpstreamConnections = 16
        public var streamResetBurst = 1000
        public var streamResetRate = 33
        public var maxContinuations = 8
        public var maxConnections = 10_000
        /// Bytes outside flow control queued for a peer that does not read, per connection.
        public var maxQueuedControlBytes = 1 << 20
        /// Unforwarded DATA one client connection may hold before new streams are refused.
        public var connectionBufferBudget = 32 << 20
        public var idleTimeout: TimeAmount = .minutes(5)
        public var prefaceTimeout: TimeAmount = .seconds(10)
        /// TLS handshakes (both sides) must finish within this time.
        public var handshakeTimeout: TimeAmount = .seconds(10)
        /// nil: connections live as long as they are used.
        public var maxConnectionAge: TimeAmount?
        /// A stream waiting this long for a slot on an upstream connection gets UNAVAILABLE.
        public var upstreamWaitTimeout: TimeAmount = .seconds(10)
        /// An upstream connection without streams for this long is closed.
        public var upstreamIdleTimeout: TimeAmount = .seconds(60)
    }

    public init() {}

    /// Checks the fields that must be present and consistent; throws naming the first bad one.
    public func validated() throws(ConfigError) -> SidecarConfig {
        guard let upstream = self.upstream else {
            throw ConfigError(field: "upstream", reason: "required (flag --upstream or YAML key upstream)")
        }
        if upstream.port == 0 { throw ConfigError(field: "upstream", reason: "port 0 is not a valid upstream") }
        guard let hop = self.hop, !hop.isEmpty else {
            throw ConfigError(field: "hop", reason: "required: the name of the hop this sidecar fronts")
        }
        try Self.checkName(hop, field: "hop")
        guard let region = self.region, !region.isEmpty else {
            throw ConfigError(field: "region", reason: "required: the region this sidecar runs in")
        }
        try Self.checkName(region, field: "region")
        if self.eventLoops < 0 || self.eventLoops > 256 {
            throw ConfigError(field: "event_loops", reason: "must be 0 (one per core) to 256, got \(self.eventLoops)")
        }
        let l = self.limits
        try Self.range(l.maxConcurrentStreams, 1...(1 << 31 - 1), "limits.max_concurrent_streams")
        try Self.range(l.maxHeaderListSize, 1024...(16 << 20), "limits.max_header_list_size")
        try Self.range(l.initialWindowSize, 65535...(1 << 31 - 1), "limits.initial_window_size")
        try Self.range(l.connectionWindowSize, 65535...(1 << 31 - 1), "limits.connection_window_size")
        try Self.range(l.maxUpstreamConnections, 1...4096, "limits.max_upstream_connections")
        try Self.range(l.streamResetBurst, 1...1_000_000, "limits.stream_reset_burst")
        try Self.range(l.streamResetRate, 1...1_000_000, "limits.stream_reset_rate")
        try Self.range(l.maxContinuations, 1...1000, "limits.max_continuations")
        try Self.range(l.maxConnections, 1...1_000_000, "limits.max_connections")
        try Self.range(l.maxQueuedControlBytes, 65536...(1 << 30), "limits.max_queued_control_bytes")
        try Self.range(l.connectionBufferBudget, 65536...(1 << 40), "limits.connection_buffer_budget")
        if l.idleTimeout < .seconds(1) {
            throw ConfigError(field: "limits.idle_timeout", reason: "must be at least 1s")
        }
        if l.handshakeTimeout < .milliseconds(100) {
            throw ConfigError(field: "limits.handshake_timeout", reason: "must be at least 100ms")
        }
        if l.prefaceTimeout < .milliseconds(100) {
            throw ConfigError(field: "limits.preface_timeout", reason: "must be at least 100ms")
        }
        if let age = l.maxConnectionAge, age < .seconds(1) {
            throw ConfigError(field: "limits.max_connection_age", reason: "must be at least 1s")
        }
        if l.upstreamWaitTimeout < .milliseconds(100) {
            throw ConfigError(field: "limits.upstream_wait_timeout", reason: "must be at least 100ms")
        }
        if l.upstreamIdleTimeout < .seconds(1) {
            throw ConfigError(field: "limits.upstream_idle_timeout", reason: "must be at least 1s")
        }
        try Self.range(self.hopLimit, 1...64, "hop_limit")
        try Self.range(self.maxRoutes, 1...Self.maxRoutesLimit, "max_routes")
        if let log = self.accessLog, log.isEmpty {
            throw ConfigError(field: "access_log", reason: "must be stdout, stderr or a file path")
        }
        try self.validateTLS()
        try self.tracing.validate()
        if self.listen == self.admin && self.listen.port != 0 {
            throw ConfigError(field: "admin", reason: "must differ from listen (\(self.listen))")
        }
        return self
    }

    /// Hop and region names end up in headers and metric labels: keep them to a safe alphabet.
    static func checkName(_ name: String, field: String) throws(ConfigError) {
        let ok =
            name.count <= 64
            && name.unicodeScalars.first.map { ("a"..."z").contains($0) || ("A"..."Z").contains($0) } == true
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || "-_.".unicodeScalars.contains($0)
            }
        if !ok {
            throw ConfigError(
                field: field,
                reason: "must be 1-64 characters of A-Z a-z 0-9 - _ . starting with a letter, got \"\(name)\"")
        }
    }

    static func range(_ v: Int, _ r: ClosedRange<Int>, _ field: String) throws(ConfigError) {
        if !r.contains(v) {
            throw ConfigError(field: field, reason: "must be between \(r.lowerBound) and \(r.upperBound), got \(v)")
        }
    }

    /// Settings that are valid but probably not what the operator wants: `check-config`
    /// prints them, `run` logs them at start.
    public var warnings: [String] {
        var out: [String] = []
        let l = self.limits
        let streamsWorth = l.maxConcurrentStreams.multipliedReportingOverflow(by: l.initialWindowSize)
        if !streamsWorth.overflow && l.connectionWindowSize < streamsWorth.partialValue {
            out.append(
                "limits.connection_window_size (\(l.connectionWindowSize)) is smaller than max_concurrent_streams × "
                    + "initial_window_size (\(streamsWorth.partialValue)): a few streams that stop reading can fill it "
                    + "and stall every other stream on the connection; the default (2147483647) avoids this")
        }
        if self.maxRoutes > Self.defaultMaxRoutes {
            let megabytes = Double(self.maxRoutes * TrafficMetrics.seriesBytesPerRoute) / 1_000_000
            out.append(
                "max_routes (\(self.maxRoutes)) is above the default (\(Self.defaultMaxRoutes)): a /metrics scrape "
                    + "may reach about \(String(format: "%.1f", megabytes)) MB (a series budget of "
                    + "\(TrafficMetrics.seriesBytesPerRoute) bytes per route)")
        }
        if self.tracing.isEnabled && !self.timing {
            out.append(
                "tracing.otlp_endpoint is set but timing is off (--no-timing): spans are made by the timing "
                    + "observer, so none are exported")
        }
        return out
    }

    /// The timing protocol settings.
    public var timingOptions: TimingOptions {
        var t = TimingOptions(hop: self.hop ?? "", region: self.region ?? "")
        t.hopLimit = self.hopLimit
        t.stripRequestHeaders = self.stripRequestHeaders
        t.stripResponseTiming = self.stripResponseTiming
        t.maxRoutes = self.maxRoutes
        t.serverTiming = self.serverTiming
        return t
    }

    /// The proxy core's configuration for these settings.
    public var proxyConfiguration: ProxyConfiguration {
        var c = ProxyConfiguration(
            listenHost: self.listen.host, listenPort: self.listen.port,
            upstreamHost: self.upstream?.host ?? "127.0.0.1", upstreamPort: self.upstream?.port ?? 0)
        c.connectTimeout = self.connectTimeout
        c.maxUpstreamConnectionsPerLoop = self.limits.maxUpstreamConnections
        c.maxConnections = self.limits.maxConnections
        c.maxQueuedControlBytes = self.limits.maxQueuedControlBytes
        c.connectionBufferBudget = self.limits.connectionBufferBudget
        c.idleTimeout = self.limits.idleTimeout
        c.prefaceTimeout = self.limits.prefaceTimeout
        c.maxConnectionAge = self.limits.maxConnectionAge
        c.upstreamWaitTimeout = self.limits.upstreamWaitTimeout
        c.upstreamIdleTimeout = self.limits.upstreamIdleTimeout
        for side in [\ProxyConfiguration.downstreamSession, \ProxyConfiguration.upstreamSession] {
            c[keyPath: side].maxConcurrentStreams = UInt32(self.limits.maxConcurrentStreams)
            c[keyPath: side].maxHeaderListSize = self.limits.maxHeaderListSize
            c[keyPath: side].initialWindowSize = Int32(self.limits.initialWindowSize)
            c[keyPath: side].connectionWindowSize = Int32(self.limits.connectionWindowSize)
            c[keyPath: side].streamResetBurst = UInt64(self.limits.streamResetBurst)
            c[keyPath: side].streamResetRate = UInt64(self.limits.streamResetRate)
            c[keyPath: side].maxContinuations = self.limits.maxContinuations
        }
        return c
    }
}
