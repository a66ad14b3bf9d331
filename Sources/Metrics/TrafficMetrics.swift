import Atomics
import Foundation

/// Passive (traffic) and active (probe) hop metrics of one sidecar.
///
/// Series are created under a lock the first time a label set appears; callers cache them
/// per event loop, so recording is atomics only. Labels that come from the network (service,
/// method, peer hop names) are capped twice: past `maxRoutes` routes (`maxSegments` segments)
/// they become `other` and the overflow is counted in ``labelOverflow``; and every series with
/// such labels is charged to the registry's ``SeriesBudget`` of `maxRoutes` ×
/// ``seriesBytesPerRoute`` bytes, past which they become `other` too (counted in
/// ``seriesOverflow``), whatever mix of codes, sources and call shapes clients cause.
public final class TrafficMetrics: @unchecked Sendable {
    public let registry: MetricsRegistry
    public let hop: String
    public let region: String
    public let maxRoutes: Int
    public let maxSegments: Int

    public let proxyOverhead: Histogram
    public let labelOverflow: Counter
    /// `insight_series_overflow_total`: label sets refused their own series by the series budget.
    public let seriesOverflow: Counter
    public let chainIncomplete: Counter
    private var headerErrors: [String: Counter] = [:]

    private let lock = NSLock()
    private var routes: [String: RouteMetrics] = [:]
    private var segments: Set<String> = []

    public static let overflowLabel = MetricsRegistry.overflowLabel

    /// Bytes of `/metrics` the series budget allows per route of `maxRoutes`: a route used by
    /// ordinary unary traffic with names of about 50 characters takes about 7 KB
    /// (Docs/metrics.md, "Series per route"), so the default 128 routes stay under 1 MB.
    public static let seriesBytesPerRoute = 7_400

    /// Series labels that come from the network, folded into `other` past the budget.
    static let routeLabels = ["service", "method"]
    static let segmentLabels = ["segment", "next"]

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
        self.seriesOverflow = registry.counter(
            "insight_series_overflow_total",
            help:
                "Label sets (service/method, segment) refused a series of their own because the series budget was spent; recorded as 'other'.",
            labels: [("hop", hop)])
        registry.limitSeries(SeriesBudget(limit: maxRoutes * Self.seriesBytesPerRoute), refusals: self.seriesOverflow)
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
            labels: [("hop", self.hop), ("segment", segment), ("next", next), ("source", source)],
            fold: Self.segmentLabels)
    }
}
