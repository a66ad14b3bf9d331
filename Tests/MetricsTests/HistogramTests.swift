import Testing

@testable import Metrics

@Suite struct HistogramTests {
    /// A registry whose clock must not be read: exemplars offered with a time use that time.
    private static func registryWithoutClock() -> MetricsRegistry {
        MetricsRegistry(clock: {
            Issue.record("the histogram read its clock")
            return 0
        })
    }

    @Test func anExemplarOfferedWithATimeKeepsThatTimeAndReadsNoClock() {
        let registry = Self.registryWithoutClock()
        let h = registry.histogram("x_seconds", help: "X.", buckets: [0.1, 1])
        let id = TraceID(high: 0x4bf9_2f35_77b3_4da6, low: 0xa3ce_929d_0e0e_4736)
        h.observe(0.05, traceID: id, unixSeconds: 1_700_000_000.25)
        h.observe(0.5, traceID: nil, unixSeconds: 1_700_000_000.5)
        #expect(h.count == 2)
        let text = registry.render(openMetrics: true)
        #expect(
            text.contains(
                #"x_seconds_bucket{le="0.1"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.05 1700000000.250"#))
        #expect(text.contains(#"x_seconds_bucket{le="1.0"} 2"# + "\n"))
    }

    @Test func aBucketKeepsTheFirstExemplarOfEachSecond() {
        let registry = Self.registryWithoutClock()
        let h = registry.histogram("x_seconds", help: "X.", buckets: [1])
        h.observe(0.1, traceID: TraceID(high: 1, low: 1), unixSeconds: 100.1)
        h.observe(0.2, traceID: TraceID(high: 2, low: 2), unixSeconds: 100.9)
        #expect(registry.render(openMetrics: true).contains("00000000000000010000000000000001\"} 0.1 100.100"))
        h.observe(0.3, traceID: TraceID(high: 3, low: 3), unixSeconds: 101.0)
        #expect(registry.render(openMetrics: true).contains("00000000000000030000000000000003\"} 0.3 101.000"))
    }

    @Test func traceIDsRoundTripThroughTheirHexDigits() {
        let id = TraceID(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210)
        #expect(id.hex == "0123456789abcdeffedcba9876543210")
        #expect(TraceID(hex: Array(id.hex.utf8)) == id)
        #expect(TraceID(hex: Array("0123456789ABCDEFfedcba9876543210".utf8)) == nil)
        #expect(TraceID(hex: Array("0123456789abcdeffedcba987654321".utf8)) == nil)
        #expect(TraceID(hex: Array("0123456789abcdeffedcba9876543210a".utf8)) == nil)
        #expect(TraceID(hex: Array("0123456789abcdeffedcba987654321g".utf8)) == nil)
    }
}
