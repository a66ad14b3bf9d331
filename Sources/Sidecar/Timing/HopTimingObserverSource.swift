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
    let metrics: TrafficMetrics
    let accessLog: AccessLog?
    let own: OwnItems
    /// The loop's clock: every time an observer of this source reads.
    let clock: StreamClock
    /// Tracing on this loop; `nil` when tracing is off (then it costs one check per stream).
    let tracing: LoopTracing?
    private var routes: [String: RouteMetrics] = [:]
    private var requestCounters: [RequestKey: Counter] = [:]
    private var segments: [SegmentKey: Histogram] = [:]
    private var random: Xoshiro256

    struct RequestKey: Hashable {
        var route: ObjectIdentifier
        var code: String
        var source: Int
    }

    struct SegmentKey: Hashable {
        var segment: String
        var next: String
        var source: Int
    }

    let recent = RecentSamples(capacity: 8192)

    init(
        options: TimingOptions, metrics: TrafficMetrics, accessLog: AccessLog?, clock: StreamClock = StreamClock(),
        tracing: LoopTracing? = nil
    ) {
        self.tracing = tracing
        self.options = options
        self.clock = clock
        self.metrics = metrics
        self.accessLog = accessLog
        self.own = OwnItems(hop: options.hop, region: options.region)
        var seed = SystemRandomNumberGenerator()
        self.random = Xoshiro256(seed: &seed)
    }

    /// A new `insight-id`: 16 bytes from a per-loop generator seeded from the system's, so
    /// that ids are unique without a system call per stream.
    func makeCorrelationID() -> String {
        let a = self.random.next()
        let b = self.random.next()
        return String(unsafeUninitializedCapacity: 32) { buffer in
            let digits: StaticString = "0123456789abcdef"
            for i in 0..<16 {
                buffer[i] = digits.utf8Start[Int((a >> UInt64(60 - 4 * i)) & 0xf)]
                buffer[16 + i] = digits.utf8Start[Int((b >> UInt64(60 - 4 * i)) & 0xf)]
            }
            return 32
        }
    }

    func makeObserver(for request: HeaderBlock) -> StreamObserver? {
        let path = request.first(":path") ?? "/"
        let route: RouteMetrics
        if let cached = self.routes[path] {
            route = cached
        } else {
            let (service, method) = Self.serviceAndMethod(path)
            route = self.metrics.route(service: service, method: method)
            if route.isOverflow {
                self.metrics.labelOverflow.increment()
            } else if self.routes.count < 4 * self.metrics.maxRoutes {
                self.routes[path] = route
            }
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

    func requests(_ route: RouteMetrics, code: String, sourceIndex: Int) -> Counter {
        let key = RequestKey(route: ObjectIdentifier(route), code: code, source: sourceIndex)
        if let c = self.requestCounters[key] { return c }
        let c = route.requests(code: code, source: sourceIndex == 1 ? "probe" : "traffic")
        self.requestCounters[key] = c
        return c
    }

    func segmentHistogram(segment: String, next: String, sourceIndex: Int) -> Histogram {
        let key = SegmentKey(segment: segment, next: next, source: sourceIndex)
        if let h = self.segments[key] { return h }
        let h = self.metrics.segment(segment: segment, next: next, source: sourceIndex == 1 ? "probe" : "traffic")
        if self.segments.count < 4 * self.metrics.maxSegments { self.segments[key] = h }
        return h
    }

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
