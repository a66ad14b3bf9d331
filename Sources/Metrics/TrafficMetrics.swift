import Atomics
import Foundation

/// Passive (traffic) and active (probe) hop metrics of one sidecar.
///
/// Series are created under a lock the first time a label set appears; callers cache them
/// per event loop, so recording is atomics only. Labels that come from the network (service,
/// method, peer hop names) are capped: past the cap they become `other` and the overflow is
/// counted.
public final class TrafficMetrics: @unchecked Sendable {
    public let registry: MetricsRegistry
    public let hop: String
    public let region: String
    public let maxRoutes: Int
    public let maxSegments: Int

    public let proxyOverhead: Histogram
    public let labelOverflow: Counter
    public let chainIncomplete: Counter
    private var headerErrors: [String: Counter] = [:]

    private let lock = NSLock()
    private var routes: [String: RouteMetrics] = [:]
    private var segments: Set<String> = []

    public static let overflowLabel = "other"

    public init(
        registry: MetricsRegistry, hop: String, region: String, maxRoutes: Int = 128, maxSegments: Int = 256,
        headerErrorReasons: [String]
    ) {
        self.registry = registry
        self.hop = hop
        self.region = region
        self.maxRoutes = maxRoutes
        self.maxSegments = maxSegments
        self.proxyOverhead = registry.histogram(
            "insight_proxy_overhead_seconds", help: "The sidecar's own time on a stream (the self value).",
            labels: [("hop", hop)])
        self.labelOverflow = registry.counter(
            "insight_label_overflow_total",
            help: "Streams whose service/method or segment labels were folded into 'other' by the cardinality cap.",
            labels: [("hop", hop)])
        self.chainIncomplete = registry.counter(
            "insight_timing_chain_incomplete_total",
            help: "Responses whose insight-timing trailer lacked entries from sidecars named in insight-chain.",
            labels: [("hop", hop)])
        for reason in headerErrorReasons {
            self.headerErrors[reason] = registry.counter(
                "insight_timing_header_errors_total", help: "Timing headers or items ignored, by reason.",
                labels: [("hop", hop), ("reason", reason)])
        }
        registry.declare(
            "insight_requests_total", help: "Calls completed, by route, status code and source.", kind: .counter)
        registry.declare(
            "insight_segment_duration_seconds", help: "Per-hop segments of end-to-end latency.", kind: .histogram)
    }

    public func headerError(_ reason: String) -> Counter? { self.headerErrors[reason] }

    /// The series of one service/method pair, or of `other` once `maxRoutes` pairs exist.
    public func route(service: String, method: String) -> RouteMetrics {
        let key = service + "/" + method
        self.lock.lock()
        defer { self.lock.unlock() }
        if let r = self.routes[key] { return r }
        if self.routes.count >= self.maxRoutes {
            let otherKey = Self.overflowLabel + "/" + Self.overflowLabel
            if let other = self.routes[otherKey] { return other }
            let other = RouteMetrics(
                metrics: self, service: Self.overflowLabel, method: Self.overflowLabel, overflow: true)
            self.routes[otherKey] = other
            return other
        }
        let r = RouteMetrics(metrics: self, service: service, method: method, overflow: false)
        self.routes[key] = r
        return r
    }

    /// The histogram of one segment; peer hop names are capped like routes.
    public func segment(segment: String, next: String, source: String) -> Histogram {
        var segment = segment
        var next = next
        self.lock.lock()
        let key = segment + "\u{0}" + next
        if !self.segments.contains(key) {
            if self.segments.count >= self.maxSegments {
                segment = Self.overflowLabel
                next = Self.overflowLabel
                self.labelOverflow.increment()
            } else {
                self.segments.insert(key)
            }
        }
        self.lock.unlock()
        return self.registry.histogram(
            "insight_segment_duration_seconds", help: "Per-hop segments of end-to-end latency.",
            labels: [("hop", self.hop), ("segment", segment), ("next", next), ("source", source)])
    }
}

/// Series for one service/method pair, each made the first time a call needs it.
///
/// A route only has the series of what happened on it: no `source="probe"` series without
/// probes, no streaming histogram for a unary method, no message counter without messages.
/// The first use makes the series under the registry's lock; after that it is one atomic load.
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
            self.registry.histogram(kind.name, help: kind.help, labels: self.labels(source)))
    }

    /// `insight_messages_total` for `source` and direction (`response` when `response`).
    public func messages(_ source: Source, response: Bool) -> Counter {
        let slot = self.messageCounters[source.rawValue * 2 + (response ? 1 : 0)]
        if let c = slot.load() { return c }
        return slot.storeIfNilThenLoad(
            self.registry.counter(
                "insight_messages_total", help: "gRPC messages, counted from their length prefixes.",
                labels: self.labels(source) + [("direction", response ? "response" : "request")]))
    }

    /// `insight_requests_total` for a status code and source.
    public func requests(code: String, source: String) -> Counter {
        self.registry.counter(
            "insight_requests_total", help: "Calls completed, by route, status code and source.",
            labels: [
                ("hop", self.hop), ("region", self.region), ("service", self.service), ("method", self.method),
                ("code", code), ("source", source),
            ])
    }
}
