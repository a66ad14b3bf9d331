import Metrics

/// The proxy core's own counters: connections, streams, bytes, resets, faults.
public final class ProxyMetrics: Sendable {
    public let downstreamConnectionsTotal: Counter
    public let downstreamConnectionsActive: Gauge
    public let upstreamConnectionsTotal: Counter
    public let upstreamConnectionsActive: Gauge
    public let upstreamConnectErrors: Counter
    public let streamsTotal: Counter
    public let streamsActive: Gauge
    public let requestBytes: Counter
    public let responseBytes: Counter
    public let resetsReceivedDownstream: Counter
    public let resetsReceivedUpstream: Counter
    public let resetsSentDownstream: Counter
    public let resetsSentUpstream: Counter
    public let protocolErrorsDownstream: Counter
    public let protocolErrorsUpstream: Counter
    public let headerListTooLarge: Counter
    public let upstreamUnavailable: Counter
    public let retries: Counter
    public let limitConnections: Counter
    public let limitPrefaceTimeout: Counter
    public let limitIdleTimeout: Counter
    public let limitMaxAge: Counter
    public let limitQueuedControlBytes: Counter
    public let limitConnectionBufferBudget: Counter
    public let limitUpstreamWaitTimeout: Counter
    public let limitUpstreamIdleTimeout: Counter

    public init(registry: MetricsRegistry) {
        let r = registry
        self.downstreamConnectionsTotal = r.counter(
            "insight_downstream_connections_total", help: "Client connections accepted.")
        self.downstreamConnectionsActive = r.gauge(
            "insight_downstream_connections_active", help: "Client connections open now.")
        self.upstreamConnectionsTotal = r.counter(
            "insight_upstream_connections_total", help: "Connections opened to the upstream hop.")
        self.upstreamConnectionsActive = r.gauge(
            "insight_upstream_connections_active", help: "Upstream connections open now.")
        self.upstreamConnectErrors = r.counter(
            "insight_upstream_connect_errors_total", help: "Failed attempts to connect to the upstream hop.")
        self.streamsTotal = r.counter("insight_streams_total", help: "Streams proxied.")
        self.streamsActive = r.gauge("insight_streams_active", help: "Streams in flight.")
        self.requestBytes = r.counter(
            "insight_bytes_total", help: "DATA payload bytes proxied.", labels: [("direction", "request")])
        self.responseBytes = r.counter(
            "insight_bytes_total", help: "DATA payload bytes proxied.", labels: [("direction", "response")])
        let resets = "insight_stream_resets_total"
        let resetsHelp = "RST_STREAM frames sent by the proxy, or received from a peer, by side of the proxy."
        self.resetsReceivedDownstream = r.counter(
            resets, help: resetsHelp, labels: [("side", "downstream"), ("direction", "received")])
        self.resetsSentDownstream = r.counter(
            resets, help: resetsHelp, labels: [("side", "downstream"), ("direction", "sent")])
        self.resetsReceivedUpstream = r.counter(
            resets, help: resetsHelp, labels: [("side", "upstream"), ("direction", "received")])
        self.resetsSentUpstream = r.counter(
            resets, help: resetsHelp, labels: [("side", "upstream"), ("direction", "sent")])
        let errors = "insight_protocol_errors_total"
        let errorsHelp = "HTTP/2 protocol errors from a peer, by side."
        self.protocolErrorsDownstream = r.counter(errors, help: errorsHelp, labels: [("side", "downstream")])
        self.protocolErrorsUpstream = r.counter(errors, help: errorsHelp, labels: [("side", "upstream")])
        self.headerListTooLarge = r.counter(
            "insight_header_list_too_large_total", help: "Header lists over the configured limit (stream reset).")
        self.upstreamUnavailable = r.counter(
            "insight_upstream_unavailable_total",
            help: "Streams answered by the proxy because the upstream was unreachable or lost.")
        let limits = "insight_limit_hits_total"
        let limitsHelp = "Connections closed or sent GOAWAY, or streams failed, because a limit was reached, by limit."
        self.limitConnections = r.counter(limits, help: limitsHelp, labels: [("limit", "max_connections")])
        self.limitPrefaceTimeout = r.counter(limits, help: limitsHelp, labels: [("limit", "preface_timeout")])
        self.limitIdleTimeout = r.counter(limits, help: limitsHelp, labels: [("limit", "idle_timeout")])
        self.limitMaxAge = r.counter(limits, help: limitsHelp, labels: [("limit", "max_connection_age")])
        self.limitQueuedControlBytes = r.counter(
            limits, help: limitsHelp, labels: [("limit", "max_queued_control_bytes")])
        self.limitConnectionBufferBudget = r.counter(
            limits, help: limitsHelp, labels: [("limit", "connection_buffer_budget")])
        self.limitUpstreamWaitTimeout = r.counter(
            limits, help: limitsHelp, labels: [("limit", "upstream_wait_timeout")])
        self.limitUpstreamIdleTimeout = r.counter(
            limits, help: limitsHelp, labels: [("limit", "upstream_idle_timeout")])
        self.retries = r.counter(
            "insight_upstream_retries_total",
            help: "Streams retried on another upstream connection after REFUSED_STREAM or a GOAWAY below their id.")
    }
}
