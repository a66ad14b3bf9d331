import Testing

@testable import Metrics

@Suite struct RouteMetricsTests {
    @Test func aRouteHasOnlyTheSeriesOfWhatHappenedOnIt() {
        let registry = MetricsRegistry()
        let metrics = TrafficMetrics(registry: registry, hop: "h", region: "r", headerErrorReasons: [])
        let before = registry.render().split(separator: "\n").filter { !$0.hasPrefix("#") }.count
        let route = metrics.route(service: "pkg.S", method: "M")
        #expect(registry.render().split(separator: "\n").filter { !$0.hasPrefix("#") }.count == before)
        route.histogram(.upstreamDuration, .traffic).observe(0.01)
        route.histogram(.upstreamTTFB, .traffic).observe(0.01)
        route.messages(.traffic, response: false).increment()
        route.messages(.traffic, response: true).increment()
        route.requests(code: "OK", source: "traffic").increment()
        let lines = registry.render().split(separator: "\n").filter { !$0.hasPrefix("#") }
        // 2 histograms x (17 buckets + +Inf + sum + count) + 2 message counters + 1 request counter.
        #expect(lines.count - before == 43)
        #expect(!lines.contains { $0.contains(#"source="probe""#) })
        #expect(!lines.contains { $0.hasPrefix("insight_stream_duration_seconds") })
        #expect(route.histogram(.upstreamDuration, .traffic) === route.histogram(.upstreamDuration, .traffic))
    }
}
