import H2Proxy
import Metrics
import NIOCore

/// Makes ``HopTimingObserver``s for the sidecar; shared by every event loop.
struct HopTimingObserverFactory: StreamObserverFactory {
    let options: TimingOptions
    let metrics: TrafficMetrics
    let accessLog: AccessLog?

    func makeLoopObserverSource(for eventLoop: EventLoop) -> LoopObserverSource {
        HopTimingObserverSource(options: self.options, metrics: self.metrics, accessLog: self.accessLog)
    }
}

/// One event loop's observer source, with loop-local caches of metric series so that the
/// per-stream path touches no lock once a route has been seen.
final class HopTimingObserverSource: LoopObserverSource {
    let options: TimingOptions
    let metrics: TrafficMetrics
    let accessLog: AccessLog?
    private var routes: [String: RouteMetrics] = [:]
    private var requestCounters: [String: Counter] = [:]
    private var segments: [String: Histogram] = [:]

    init(options: TimingOptions, metrics: TrafficMetrics, accessLog: AccessLog?) {
        self.options = options
        self.metrics = metrics
        self.accessLog = accessLog
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
        var isGRPC = false
        if let i = request.firstIndex(of: "content-type") { isGRPC = request.valueHasPrefix(at: i, "application/grpc") }
        var wantsTrailers = false
        for i in 0..<request.count where request.nameEquals(at: i, "te") && request.valueEquals(at: i, "trailers") {
            wantsTrailers = true
        }
        return HopTimingObserver(
            source: self, route: route, isProbe: request.firstIndex(of: "insight-probe") != nil, isGRPC: isGRPC,
            clientWantsTrailers: wantsTrailers)
    }

    func requests(_ route: RouteMetrics, code: String, sourceIndex: Int) -> Counter {
        let key = "\(route.service)/\(route.method)|\(code)|\(sourceIndex)"
        if let c = self.requestCounters[key] { return c }
        let c = route.requests(code: code, source: sourceIndex == 1 ? "probe" : "traffic")
        self.requestCounters[key] = c
        return c
    }

    func segmentHistogram(segment: String, next: String, sourceIndex: Int) -> Histogram {
        let key = "\(segment)|\(next)|\(sourceIndex)"
        if let h = self.segments[key] { return h }
        let h = self.metrics.segment(segment: segment, next: next, source: sourceIndex == 1 ? "probe" : "traffic")
        if self.segments.count < 4 * self.metrics.maxSegments { self.segments[key] = h }
        return h
    }

    /// `/pkg.Service/Method` → (`pkg.Service`, `Method`); anything else → (`http`, first path segment or `/`).
    static func serviceAndMethod(_ path: String) -> (String, String) {
        let trimmed = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: true)
        if parts.count == 2 && parts[0].contains(".") {
            return (String(parts[0].prefix(128)), String(parts[1].prefix(128)))
        }
        return ("http", parts.first.map { "/" + $0.prefix(64) } ?? "/")
    }
}
