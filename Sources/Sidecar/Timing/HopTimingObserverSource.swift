import Foundation
import H2Proxy
import Metrics
import NIOCore

/// One event loop's observer source, with loop-local caches of metric series so that the
/// per-stream path touches no lock once a route has been seen.
///
/// `@unchecked Sendable` only so that the admin API can hand it to its own loop with
/// `submit`; it is never touched anywhere else.
final class HopTimingObserverSource: LoopObserverSource, @unchecked Sendable {
    let options: TimingOptions
    /// The fields of ``options`` a stream reads, stored on their own: a read through
    /// ``options`` copied the struct, a retain and a release of its two strings each time.
    let hop: String
    let hopLimit: Int
    let stripRequestHeaders: Bool
    let stripResponseTiming: Bool
    /// `serverTiming || stripResponseTiming`: streams edit `server-timing`.
    let editsServerTiming: Bool
    let metrics: TrafficMetrics
    let accessLog: AccessLog?
    let own: OwnItems
    /// The loop's clock: every time an observer of this source reads.
    let clock: StreamClock
    /// Tracing on this loop; `nil` when tracing is off (then it costs one check per stream).
    let tracing: LoopTracing?
    /// This loop's cells in the registry's counters and histograms (``MetricShard``).
    let shard: MetricShard
    /// Routes by the `:path` bytes before any query string.
    private var routeCache: RouteCache
    /// This loop's view of each route's series, by the shared route object (at most
    /// `maxRoutes` + 1 of them, with the overflow route).
    private var loopRoutes: [ObjectIdentifier: LoopRoute] = [:]
    /// The first segment histograms this loop used: the own hop's segments (whose names are
    /// the same `String`s every time) are found with a few word compares, no hashing.
    private var firstSegments: [(segment: String, next: String, source: Int, histogram: Histogram)] = []
    /// The histograms of ``firstSegments``, unretained (that array keeps them): recording a
    /// segment reads no reference it has to retain and release.
    private var firstSegmentRefs: [Unmanaged<Histogram>] = []
    /// The rest.
    private var segments: [SegmentKey: Histogram] = [:]

    struct SegmentKey: Hashable {
        var segment: String
        var next: String
        var source: Int
    }

    /// Segments kept in ``firstSegments``.
    static let firstSegmentCount = 8
    private var random: Xoshiro256
    /// Unix nanoseconds minus monotonic nanoseconds (``StreamClock/wallClockOffsetNanos()``),
    /// and the monotonic time it was read: wall-clock stamps are derived from times the
    /// stream already read, with the offset read again at most once a second.
    private var wallOffsetNanos: Int64 = 0
    private var wallOffsetReadAt: UInt64?

    /// The array each stream's timing headers are read into (``TimingHeaders/withPlainList(_:in:scratch:_:)``):
    /// one per loop instead of one per header read.
    var plainItems: [TimingListParser.PlainItem] = []
    /// Emptied arrays of inner hops' timing entries, for later streams (``takeEntries()``).
    private var spareEntries: [[TimingEntry]] = []
    /// Arrays kept at most in ``spareEntries``, and the capacity past which one is not kept.
    static let spareEntriesLimit = 256
    static let spareEntriesMaxCapacity = 2 * TimingHeaders.maxEntries

    let recent = RecentSamples(capacity: 8192)
    /// `insight_proxy_overhead_seconds`, held here so that recording it retains nothing.
    let proxyOverhead: Histogram

    init(
        options: TimingOptions, metrics: TrafficMetrics, accessLog: AccessLog?, clock: StreamClock = StreamClock(),
        tracing: LoopTracing? = nil, shard: MetricShard = .shared
    ) {
        self.tracing = tracing
        self.shard = shard
        self.options = options
        self.hop = options.hop
        self.hopLimit = options.hopLimit
        self.stripRequestHeaders = options.stripRequestHeaders
        self.stripResponseTiming = options.stripResponseTiming
        self.editsServerTiming = options.serverTiming || options.stripResponseTiming
        self.clock = clock
        self.metrics = metrics
        self.proxyOverhead = metrics.proxyOverhead
        self.accessLog = accessLog
        self.own = OwnItems(hop: options.hop, region: options.region)
        self.routeCache = RouteCache(limit: 4 * metrics.maxRoutes)
        var seed = SystemRandomNumberGenerator()
        self.random = Xoshiro256(seed: &seed)
    }

    /// A new `insight-id`: 16 bytes from a per-loop generator seeded from the system's, so
    /// that ids are unique without a system call per stream.
    func makeTraceID() -> TraceID {
        TraceID(high: self.random.next(), low: self.random.next())
    }

    /// ``makeTraceID()`` as its 32 hex digits.
    func makeCorrelationID() -> String { self.makeTraceID().hex }

    /// Unix microseconds at `at`, a time read from ``clock``: `at` plus the offset between the
    /// wall and monotonic clocks, read again when it is a second old (so a step of the wall
    /// clock shows within a second, and a stream reads no wall clock of its own).
    func unixMicros(at: NIODeadline) -> Int64 {
        let now = at.uptimeNanoseconds
        if let readAt = self.wallOffsetReadAt, now &- readAt < 1_000_000_000 {
        } else {
            self.wallOffsetNanos = self.clock.wallClockOffsetNanos()
            self.wallOffsetReadAt = now
        }
        return (Int64(bitPattern: now) &+ self.wallOffsetNanos) / 1000
    }

    func makeObserver(for request: HeaderBlock) -> StreamObserver? {
        let route: LoopRoute
        if let i = request.firstIndex(of: ":path") {
            route = request.value(at: i).withContiguousStorageIfAvailable(self.route(path:)) ?? self.route(path: "/")
        } else {
            route = self.route(path: "/")
        }
        let isGRPC = request.isGRPC
        var wantsTrailers = false
        for i in 0..<request.count where request.nameEquals(at: i, "te") && request.valueEquals(at: i, "trailers") {
            wantsTrailers = true
        }
        let isProbe = request.firstIndex(of: "insight-probe") != nil
        let observer = HopTimingObserver(
            source: self, route: route, isProbe: isProbe, isGRPC: isGRPC, clientWantsTrailers: wantsTrailers)
        if isProbe { observer.probeTarget = request.first("insight-probe-target").map { String($0.prefix(128)) } }
        return observer
    }

    private func route(path: StaticString) -> LoopRoute {
        self.route(path: UnsafeBufferPointer(start: path.utf8Start, count: path.utf8CodeUnitCount))
    }

    /// The route of request path `path` (the `:path` bytes): from the cache, else made and
    /// remembered. A stream folded into the overflow route counts in `labelOverflow` each time.
    private func route(path: UnsafeBufferPointer<UInt8>) -> LoopRoute {
        let key = RouteCache.routePath(path)
        if let recent = self.routeCache.recent(key) { return recent }
        let hash = RouteCache.hash(key)
        if let cached = self.routeCache.route(for: key, hash: hash) { return cached }
        let (service, method) = Self.serviceAndMethod(String(decoding: key, as: UTF8.self))
        let shared = self.metrics.route(service: service, method: method)
        let route: LoopRoute
        if let known = self.loopRoutes[ObjectIdentifier(shared)] {
            route = known
        } else {
            route = LoopRoute(shared, shard: self.shard)
            self.loopRoutes[ObjectIdentifier(shared)] = route
        }
        if shared.isOverflow {
            self.metrics.labelOverflow.increment()
        } else {
            self.routeCache.insert(route, for: key, hash: hash)
        }
        return route
    }

    /// Paths the route cache remembers (for tests).
    var cachedPaths: Int { self.routeCache.count }

    /// Observes `seconds` in the segment histogram of `segment` → `next` from `sourceIndex`
    /// (0 traffic, 1 probe): for the first segments, without retaining the histogram.
    func observeSegment(
        segment: String, next: String, sourceIndex: Int, _ seconds: Double, traceID: TraceID?, unixSeconds: Double
    ) {
        for i in self.firstSegmentRefs.indices {
            guard
                self.firstSegments[i].source == sourceIndex && self.firstSegments[i].segment == segment
                    && self.firstSegments[i].next == next
            else { continue }
            self.firstSegmentRefs[i]._withUnsafeGuaranteedRef {
                $0.observe(seconds, traceID: traceID, unixSeconds: unixSeconds, shard: self.shard)
            }
            return
        }
        self.segmentHistogram(segment: segment, next: next, sourceIndex: sourceIndex)
            .observe(seconds, traceID: traceID, unixSeconds: unixSeconds, shard: self.shard)
    }

    func segmentHistogram(segment: String, next: String, sourceIndex: Int) -> Histogram {
        for entry in self.firstSegments
        where entry.source == sourceIndex && entry.segment == segment && entry.next == next {
            return entry.histogram
        }
        let key = SegmentKey(segment: segment, next: next, source: sourceIndex)
        if let h = self.segments[key] { return h }
        let h = self.metrics.segment(segment: segment, next: next, source: sourceIndex == 1 ? "probe" : "traffic")
        if self.firstSegments.count < Self.firstSegmentCount {
            self.firstSegments.append((segment, next, sourceIndex, h))
            self.firstSegmentRefs.append(Unmanaged.passUnretained(h))
        } else if self.segments.count < 4 * self.metrics.maxSegments {
            self.segments[key] = h
        }
        return h
    }

    /// An empty array for a stream's inner hops' timing entries: a kept one if there is one.
    func takeEntries() -> [TimingEntry] {
        if let spare = self.spareEntries.popLast() { return spare }
        var entries: [TimingEntry] = []
        entries.reserveCapacity(8)
        return entries
    }

    /// Keeps `entries`, emptied, for a later ``takeEntries()`` (unless enough are kept or it
    /// is large). Called when the stream's observer goes, on its loop.
    func giveEntries(_ entries: consuming [TimingEntry]) {
        guard self.spareEntries.count < Self.spareEntriesLimit, entries.capacity > 0,
            entries.capacity <= Self.spareEntriesMaxCapacity
        else { return }
        entries.removeAll(keepingCapacity: true)
        self.spareEntries.append(entries)
    }

    /// Arrays kept for reuse now (for tests).
    var spareEntryArrays: Int { self.spareEntries.count }

    /// `/pkg.Service/Method` → (`pkg.Service`, `Method`); anything else → (`http`, first path segment or `/`).
    /// Names longer than 128 characters (a path segment longer than 64) are cut with a hash
    /// suffix (``LabelValue/truncated(_:to:)``), so that they never merge two routes.
    static func serviceAndMethod(_ path: String) -> (String, String) {
        let trimmed = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: true)
        if parts.count == 2 && parts[0].contains(".") {
            return (LabelValue.truncated(parts[0], to: 128), LabelValue.truncated(parts[1], to: 128))
        }
        return ("http", parts.first.map { "/" + LabelValue.truncated($0, to: 64) } ?? "/")
    }
}
