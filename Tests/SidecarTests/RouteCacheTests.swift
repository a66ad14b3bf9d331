import H2Proxy
import Metrics
import Testing

@testable import Sidecar

@Suite struct RouteCacheTests {
    private static func source(maxRoutes: Int = 128) -> (HopTimingObserverSource, TrafficMetrics) {
        let metrics = TrafficMetrics(
            registry: MetricsRegistry(), hop: "h", region: "r", maxRoutes: maxRoutes, headerErrorReasons: [])
        return (
            HopTimingObserverSource(options: TimingOptions(hop: "h", region: "r"), metrics: metrics, accessLog: nil),
            metrics
        )
    }

    private static func route(_ source: HopTimingObserverSource, path: String?) throws -> LoopRoute {
        var request = HeaderBlock([(":method", "GET")])
        if let path { request.append(name: ":path", value: path) }
        return try #require(source.makeObserver(for: request) as? HopTimingObserver).loopRoute
    }

    @Test func pathsThatDifferOnlyInTheirQueryShareOneEntry() throws {
        let (source, _) = Self.source()
        let a = try Self.route(source, path: "/pkg.Service/Method?x=1")
        let b = try Self.route(source, path: "/pkg.Service/Method?x=2")
        let c = try Self.route(source, path: "/pkg.Service/Method")
        #expect(a === b && b === c)
        #expect(a.metrics.service == "pkg.Service" && a.metrics.method == "Method")
        #expect(source.cachedPaths == 1)
    }

    @Test func pathsOfOneRouteShareItsSeries() throws {
        let (source, _) = Self.source()
        let a = try Self.route(source, path: "/docs")
        let b = try Self.route(source, path: "/docs/more/index.html")
        let none = try Self.route(source, path: nil)
        let root = try Self.route(source, path: "/")
        #expect(a === b)
        #expect(a.metrics.service == "http" && a.metrics.method == "/docs")
        #expect(none === root && root.metrics.method == "/")
        #expect(source.cachedPaths == 3)
    }

    @Test func overflowStreamsAreCountedEachTimeAndNotRemembered() throws {
        let (source, metrics) = Self.source(maxRoutes: 1)
        let first = try Self.route(source, path: "/a")
        let x = try Self.route(source, path: "/b")
        let y = try Self.route(source, path: "/b")
        #expect(!first.metrics.isOverflow)
        #expect(x === y && x.metrics.isOverflow)
        #expect(metrics.labelOverflow.value == 2)
        #expect(source.cachedPaths == 1)
    }

    /// The route found last is checked first, without hashing; alternating routes still find
    /// their own, and a path that only starts like the last one is not taken for it.
    @Test func theLastRouteIsFoundWithoutHashingAndNeverForAnotherPath() throws {
        let (source, _) = Self.source()
        let a = try Self.route(source, path: "/pkg.S/A")
        let b = try Self.route(source, path: "/pkg.S/B")
        for _ in 0..<3 {
            #expect(try Self.route(source, path: "/pkg.S/A") === a)
            #expect(try Self.route(source, path: "/pkg.S/A") === a)
            #expect(try Self.route(source, path: "/pkg.S/B") === b)
        }
        let longer = try Self.route(source, path: "/pkg.S/BB")
        #expect(longer !== b && longer.metrics.method == "BB")
        #expect(try Self.route(source, path: "/pkg.S/B?q") === b)
        #expect(source.cachedPaths == 3)
        var cache = RouteCache(limit: 4)
        Array("/x".utf8).withUnsafeBufferPointer { #expect(cache.recent($0) == nil) }
    }

    @Test func theCacheStopsAtItsLimitAndStillAnswers() {
        var cache = RouteCache(limit: 3)
        let metrics = TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: [])
        let route = LoopRoute(metrics.route(service: "s", method: "m"))
        for i in 0..<10 {
            let path = Array("/p\(i)".utf8)
            path.withUnsafeBufferPointer { p in
                cache.insert(route, for: p, hash: RouteCache.hash(p))
                #expect((cache.route(for: p, hash: RouteCache.hash(p)) != nil) == (i < 3))
            }
        }
        #expect(cache.count == 3)
    }

    /// The recording methods (which reach remembered series without retaining them) count in
    /// the same series as the accessors, before and after a series is remembered and past the
    /// codes a route remembers.
    @Test func aLoopRouteRecordsIntoTheSameSeriesWithoutAccessors() {
        let metrics = TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: [])
        let route = LoopRoute(metrics.route(service: "s", method: "m"))
        let codes = (0..<(LoopRoute.maxCachedCodes + 4)).map { CallCode.http(300 + $0)! }
        for code in codes + codes { route.countRequest(code: code, source: .traffic) }
        route.countRequest(code: .ok, source: .probe)
        for code in codes { #expect(route.metrics.requests(code: code.name, source: "traffic").value == 2) }
        #expect(route.metrics.requests(code: "OK", source: "probe").value == 1)
        #expect(route.metrics.requests(code: "OK", source: "traffic").value == 0)
        for kind in RouteMetrics.HistogramKind.allCases {
            route.observe(kind, .traffic, 0.002, traceID: nil, unixSeconds: 0)
            route.observe(kind, .traffic, 0.004, traceID: nil, unixSeconds: 0)
            #expect(route.histogram(kind, .traffic).count == 2)
            #expect(abs(route.metrics.histogram(kind, .traffic).sum - 0.006) < 1e-9)
        }
        #expect(route.metrics.histogram(.upstreamTTFB, .probe).count == 0)
    }

    /// Segments recorded through the source land in the registry's series, for the first ones
    /// (remembered, reached unretained) and for those past them, traffic and probes apart.
    @Test func segmentsPastTheFirstOnesLandInTheirOwnSeries() {
        let (source, metrics) = Self.source()
        let count = HopTimingObserverSource.firstSegmentCount + 4
        for round in 0..<2 {
            for i in 0..<count {
                source.observeSegment(
                    segment: "h", next: "n\(i)", sourceIndex: i % 2, 0.001 * Double(round + 1), traceID: nil,
                    unixSeconds: 0)
            }
        }
        for i in 0..<count {
            let h = metrics.segment(segment: "h", next: "n\(i)", source: i % 2 == 1 ? "probe" : "traffic")
            #expect(h.count == 2)
            #expect(abs(h.sum - 0.003) < 1e-9)
            #expect(metrics.segment(segment: "h", next: "n\(i)", source: i % 2 == 1 ? "traffic" : "probe").count == 0)
        }
    }

    @Test func aLoopRouteCountsEveryCodePastTheOnesItRemembers() {
        let metrics = TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: [])
        let route = LoopRoute(metrics.route(service: "s", method: "m"))
        let codes = (0..<(LoopRoute.maxCachedCodes + 8)).map { CallCode.http(200 + $0)! }
        for code in codes + codes { route.requests(code: code, source: .traffic).increment() }
        route.requests(code: .http(200)!, source: .probe).increment()
        #expect(route.cachedCodes == LoopRoute.maxCachedCodes)
        for code in codes { #expect(route.metrics.requests(code: code.name, source: "traffic").value == 2) }
        #expect(route.metrics.requests(code: "200", source: "probe").value == 1)
    }
}
