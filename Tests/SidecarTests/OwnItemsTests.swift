import H2Proxy
import Metrics
import Testing

@testable import Sidecar

@Suite struct OwnItemsTests {
    /// The per-stream fast path must produce exactly what the library serialises.
    @Test func ownItemsMatchTheLibrary() throws {
        let own = OwnItems(hop: "mediary-a", region: "eu-west")
        let stamp = HopStamp(hop: "mediary-a", region: "eu-west", epochMicros: 1_796_000_000_123_456)
        #expect(own.hops(epochMicros: 1_796_000_000_123_456) == TimingHeaders.serialize([stamp.item]))
        for (d, t, s) in [(41.234, 40.0, 0.123), (0.0, 0.001, 0.0), (123_456.789, 1.5, 2.25)] {
            let e = TimingEntry(hop: "mediary-a", duration: d, ttfb: t, selfTime: s)
            #expect(own.timing(e) == TimingHeaders.serialize([e.item]))
        }
        #expect(own.chainItem == "mediary-a")
    }

    /// The stamp written from a stack buffer is the library's serialisation, digit for digit.
    @Test func theHopsStampWrittenInPlaceMatchesTheLibrary() {
        let own = OwnItems(hop: "mediary-a", region: "eu-west")
        for t: Int64 in [0, 7, 10, 999, 1_796_000_000_123_456, Int64.max] {
            let stamp = HopStamp(hop: "mediary-a", region: "eu-west", epochMicros: t)
            let written = own.withHops(epochMicros: t) { String(decoding: $0, as: UTF8.self) }
            #expect(written == TimingHeaders.serialize([stamp.item]))
        }
        #expect(own.withHops(epochMicros: -12) { String(decoding: $0, as: UTF8.self) }.hasSuffix(#"t="-12""#))
    }

    @Test func appendingKeepsValidTextAndRepairsInvalid() {
        var problems: [TimingHeaders.Problem] = []
        let ok = HeaderBlock([("insight-chain", "a"), ("insight-chain", "b")])
        let parsed = TimingHeaders.parseListKeepingText("insight-chain", in: ok, problems: &problems)
        #expect(parsed?.validText == "a, b")
        #expect(TimingHeaders.appending("c", to: parsed?.validText, items: parsed?.items ?? []) == "a, b, c")
        let bad = HeaderBlock([("insight-chain", "a, (x y)")])
        let p2 = TimingHeaders.parseListKeepingText("insight-chain", in: bad, problems: &problems)
        #expect(p2?.validText == nil)
        #expect(TimingHeaders.appending("c", to: nil, items: p2?.items ?? []) == "a, c")
    }

    @Test func correlationIDsFromTheLoopGenerator() {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil)
        let ids = (0..<1000).map { _ in source.makeCorrelationID() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy(CorrelationID.isHexID))
    }
}
