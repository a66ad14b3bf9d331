import Metrics

/// One route's series as one event loop records them: found once per stream by the loop's
/// ``HopTimingObserverSource`` (``RouteCache``) and touched by no other thread, so that
/// recording a stream's end finds every series without a lock, a hash or an atomic load, and
/// records into the loop's own cells of each (``shard``, see ``MetricShard``).
///
/// The series themselves belong to the shared ``RouteMetrics`` (and its registry); this
/// only remembers which ones this loop has used.
final class LoopRoute {
    let metrics: RouteMetrics
    /// The loop's cells in every series it records.
    let shard: MetricShard
    /// Indexed by `HistogramKind.rawValue * 2 + Source.rawValue`.
    private var histograms: [Histogram?]
    /// Indexed by `Source.rawValue * 2 + (response ? 1 : 0)`.
    private var messageCounters: [Counter?]
    /// `insight_requests_total` by code and source, in the order first seen (codes compare as
    /// numbers; the label text is made once, with the series).
    private var requestCounters: [(code: CallCode, source: RouteMetrics.Source, counter: Counter)] = []

    // The same series, unretained, for the recording methods: reading a class reference out of
    // an array retains it and releases it after the call (two atomic operations per series per
    // stream). The arrays above and the route's `RouteMetrics` keep every one alive as long as
    // this route.
    private var histogramRefs: [Unmanaged<Histogram>?]
    private var requestCodes: [CallCode] = []
    private var requestSources: [RouteMetrics.Source] = []
    private var requestRefs: [Unmanaged<Counter>] = []

    /// Codes per route remembered by one loop; a route that ends with more (HTTP statuses are
    /// chosen by the upstream) finds the rest through ``RouteMetrics/requests(code:source:)``.
    static let maxCachedCodes = 32

    init(_ metrics: RouteMetrics, shard: MetricShard = .shared) {
        self.metrics = metrics
        self.shard = shard
        self.histograms = Array(repeating: nil, count: RouteMetrics.HistogramKind.allCases.count * 2)
        self.histogramRefs = Array(repeating: nil, count: RouteMetrics.HistogramKind.allCases.count * 2)
        self.messageCounters = Array(repeating: nil, count: 4)
    }

    /// The histogram `kind` of calls from `source`.
    func histogram(_ kind: RouteMetrics.HistogramKind, _ source: RouteMetrics.Source) -> Histogram {
        let i = kind.rawValue * 2 + source.rawValue
        if let h = self.histograms[i] { return h }
        let h = self.metrics.histogram(kind, source)
        self.histograms[i] = h
        self.histogramRefs[i] = Unmanaged.passUnretained(h)
        return h
    }

    /// Observes `seconds` in the histogram `kind` of calls from `source` (see
    /// ``Histogram/observe(_:traceID:unixSeconds:)``), retaining nothing once the series exists.
    func observe(
        _ kind: RouteMetrics.HistogramKind, _ source: RouteMetrics.Source, _ seconds: Double, traceID: TraceID?,
        unixSeconds: Double
    ) {
        let i = kind.rawValue * 2 + source.rawValue
        guard let ref = self.histogramRefs[i] else {
            self.histogram(kind, source).observe(seconds, traceID: traceID, unixSeconds: unixSeconds, shard: self.shard)
            return
        }
        ref._withUnsafeGuaranteedRef {
            $0.observe(seconds, traceID: traceID, unixSeconds: unixSeconds, shard: self.shard)
        }
    }

    /// `insight_messages_total` for `source` and direction.
    func messages(_ source: RouteMetrics.Source, response: Bool) -> Counter {
        let i = source.rawValue * 2 + (response ? 1 : 0)
        if let c = self.messageCounters[i] { return c }
        let c = self.metrics.messages(source, response: response)
        self.messageCounters[i] = c
        return c
    }

    /// `insight_requests_total` for `code` and `source`.
    func requests(code: CallCode, source: RouteMetrics.Source) -> Counter {
        for entry in self.requestCounters where entry.source == source && entry.code == code { return entry.counter }
        let c = self.metrics.requests(code: code.name, source: source.label)
        if self.requestCounters.count < Self.maxCachedCodes {
            self.requestCounters.append((code, source, c))
            self.requestCodes.append(code)
            self.requestSources.append(source)
            self.requestRefs.append(Unmanaged.passUnretained(c))
        }
        return c
    }

    /// Counts one call that ended with `code`, from `source`, in `insight_requests_total`.
    func countRequest(code: CallCode, source: RouteMetrics.Source) {
        for i in self.requestCodes.indices where self.requestSources[i] == source && self.requestCodes[i] == code {
            self.requestRefs[i]._withUnsafeGuaranteedRef { $0.increment(shard: self.shard) }
            return
        }
        self.requests(code: code, source: source).increment(shard: self.shard)
    }

    /// Codes this loop remembers for the route (for tests).
    var cachedCodes: Int { self.requestCounters.count }
}
