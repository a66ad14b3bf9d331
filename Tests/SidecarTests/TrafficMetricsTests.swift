import H2Proxy
import Metrics
import Testing

@testable import Sidecar

@Suite struct TrafficMetricsTests {
    @Test func routesPastTheCapFoldIntoOther() {
        let registry = MetricsRegistry()
        let m = TrafficMetrics(registry: registry, hop: "h", region: "r", maxRoutes: 3, headerErrorReasons: [])
        for i in 0..<3 { #expect(!m.route(service: "s\(i)", method: "m").isOverflow) }
        let overflow = m.route(service: "s9", method: "m")
        #expect(overflow.isOverflow)
        #expect(overflow.service == "other")
        #expect(m.route(service: "s1", method: "m").service == "s1")
        #expect(m.route(service: "s10", method: "m") === overflow)
    }

    @Test func segmentLabelsPastTheCapFoldIntoOther() {
        let registry = MetricsRegistry()
        let m = TrafficMetrics(registry: registry, hop: "h", region: "r", maxSegments: 2, headerErrorReasons: [])
        _ = m.segment(segment: "a", next: "b", source: "traffic")
        _ = m.segment(segment: "b", next: "c", source: "traffic")
        _ = m.segment(segment: "evil1", next: "x", source: "traffic")
        _ = m.segment(segment: "evil2", next: "x", source: "traffic")
        #expect(m.labelOverflow.value == 2)
        #expect(registry.render().contains("segment=\"other\",next=\"other\""))
        #expect(!registry.render().contains("evil"))
    }
}
