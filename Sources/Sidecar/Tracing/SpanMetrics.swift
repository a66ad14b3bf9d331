import Metrics

/// The tracing counters of one sidecar; registered only when tracing is on.
struct SpanMetrics: Sendable {
    /// Why a span never reached the collector (the `reason` label of `insight_spans_dropped_total`).
    enum DropReason: String, CaseIterable, Sendable {
        /// The export queue was full (the collector slow or down for a while).
        case queueFull = "queue_full"
        /// The collector refused the batch, answered an error status or could not be reached.
        case exportFailed = "export_failed"
        /// The collector did not answer within the export timeout.
        case exportTimeout = "export_timeout"
    }

    let dropped: [DropReason: Counter]
    let exported: Counter
    let started: Counter
    let invalidTraceparent: Counter

    init(registry: MetricsRegistry, hop: String) {
        var dropped: [DropReason: Counter] = [:]
        for reason in DropReason.allCases {
            dropped[reason] = registry.counter(
                "insight_spans_dropped_total", help: "Spans that never reached the collector, by reason.",
                labels: [("hop", hop), ("reason", reason.rawValue)])
        }
        self.dropped = dropped
        self.exported = registry.counter(
            "insight_spans_exported_total", help: "Spans the collector accepted.", labels: [("hop", hop)])
        self.started = registry.counter(
            "insight_spans_started_total", help: "Spans started (one per forwarded stream of a sampled trace).",
            labels: [("hop", hop)])
        self.invalidTraceparent = registry.counter(
            "insight_traceparent_invalid_total",
            help: "Requests whose traceparent broke the W3C rules; treated as absent (a new trace starts).",
            labels: [("hop", hop)])
    }

    func drop(_ reason: DropReason, count: Int) {
        self.dropped[reason]?.increment(by: UInt64(max(0, count)))
    }
}
