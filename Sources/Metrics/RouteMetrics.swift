import Atomics

/// Series for one service/method pair, each made the first time a call needs it.
///
/// A route only has the series of what happened on it: no `source="probe"` series without
/// probes, no streaming histogram for a unary method, no message counter without messages.
/// The first use makes the series under the registry's lock; after that it is one atomic load.
/// Each series is charged to the registry's ``SeriesBudget``; once it is spent, a series not
/// made yet is the family's `service="other", method="other"` series.
public final class RouteMetrics: Sendable {
    public let service: String
    public let method: String
    /// Whether this is the `other` route of the cardinality cap.
    public let isOverflow: Bool
    let registry: MetricsRegistry
    let hop: String
    let region: String

    /// Where a call came from: the `source` label.
    public enum Source: Int, Sendable, CaseIterable {
        case traffic, probe
        public var label: String { self == .traffic ? "traffic" : "probe" }
    }

    /// The per-route histogram families.
    public enum HistogramKind: Int, Sendable, CaseIterable {
        /// `insight_upstream_duration_seconds`: unary-shaped calls, request headers sent → end.
        case upstreamDuration
        /// `insight_stream_duration_seconds`: the same for streaming calls.
        case streamDuration
        /// `insight_upstream_ttfb_seconds`: request headers sent → response headers received.
        case upstreamTTFB

        var name: String {
            switch self {
            case .upstreamDuration: "insight_upstream_duration_seconds"
            case .streamDuration: "insight_stream_duration_seconds"
            case .upstreamTTFB: "insight_upstream_ttfb_seconds"
            }
        }

        var help: String {
            switch self {
            case .upstreamDuration:
                "Unary-shaped calls, however they ended: request headers sent upstream to the end of the call."
            case .streamDuration:
                "Streaming calls, however they ended: request headers sent upstream to the end of the call."
            case .upstreamTTFB: "Request headers sent upstream to response headers received."
            }
        }
    }

    /// Indexed by `HistogramKind.rawValue * 2 + Source.rawValue`.
    private let histograms: [ManagedAtomicLazyReference<Histogram>]
    /// Indexed by `Source.rawValue * 2 + StreamDirection` (0 request, 1 response).
    private let messageCounters: [ManagedAtomicLazyReference<Counter>]

    init(metrics: TrafficMetrics, service: String, method: String, overflow: Bool) {
        self.service = service
        self.method = method
        self.isOverflow = overflow
        self.registry = metrics.registry
        self.hop = metrics.hop
        self.region = metrics.region
        self.histograms = (0..<(HistogramKind.allCases.count * 2)).map { _ in ManagedAtomicLazyReference() }
        self.messageCounters = (0..<4).map { _ in ManagedAtomicLazyReference() }
    }

    private func labels(_ source: Source) -> [(String, String)] {
        [("hop", self.hop), ("service", self.service), ("method", self.method), ("source", source.label)]
    }

    /// The histogram `kind` of calls from `source`, made on first use.
    public func histogram(_ kind: HistogramKind, _ source: Source) -> Histogram {
        let slot = self.histograms[kind.rawValue * 2 + source.rawValue]
        if let h = slot.load() { return h }
        // The registry returns the same object for the same labels, so a race stores one histogram.
        return slot.storeIfNilThenLoad(
            self.registry.histogram(
                kind.name, help: kind.help, labels: self.labels(source), fold: TrafficMetrics.routeLabels))
    }

    /// `insight_messages_total` for `source` and direction (`response` when `response`).
    public func messages(_ source: Source, response: Bool) -> Counter {
        let slot = self.messageCounters[source.rawValue * 2 + (response ? 1 : 0)]
        if let c = slot.load() { return c }
        return slot.storeIfNilThenLoad(
            self.registry.counter(
                "insight_messages_total", help: "gRPC messages, counted from their length prefixes.",
                labels: self.labels(source) + [("direction", response ? "response" : "request")],
                fold: TrafficMetrics.routeLabels))
    }

    /// `insight_requests_total` for a status code and source.
    public func requests(code: String, source: String) -> Counter {
        self.registry.counter(
            "insight_requests_total", help: "Calls completed, by route, status code and source.",
            labels: [
                ("hop", self.hop), ("region", self.region), ("service", self.service), ("method", self.method),
                ("code", code), ("source", source),
            ], fold: TrafficMetrics.routeLabels)
    }
}
