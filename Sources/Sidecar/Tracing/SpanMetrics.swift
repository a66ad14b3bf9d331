import Metrics

/// The tracing counters of one sidecar; registered only when tracing is on.
struct SpanMetrics: Sendable {
    /// Why a span never reached the collector (the `reason` label of `insight_spans_dropped_total`).
    enum DropReason: String, CaseIterable, Sendable {
        /// More than `tracing.max_queued_spans` were waiting (the collector slow or down for a while).
        case queueFull = "queue_full"
        /// The collector could not be reached, or answered 5xx (502/503/504 after the retries).
        case exportFailed = "export_failed"
        /// The collector did not answer within the request timeout (4 s).
        case exportTimeout = "export_timeout"
        /// The collector answered 429 to every retry, or asked to wait past the retry budget.
        case throttled = "throttled"
        /// The collector refused them: a 4xx other than 429 (not retried, as the OTLP
        /// specification says), or `rejected_spans` of a partial success.
        case rejected = "rejected"
        /// Still queued or being sent when the 2 s export at shutdown ran out, or ended after it.
        case shutdown = "shutdown"
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
