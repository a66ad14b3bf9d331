import H2Proxy
import Metrics
import Testing

@testable import Sidecar

@Suite struct TimingChainTests {
    @Test func segmentsSubtractTheNextSidecarsDurationAndSelf() {
        let chain = TimingChain(entries: [
            TimingEntry(hop: "gateway-b", duration: 15.5, ttfb: 15.4, selfTime: 0.2),
            TimingEntry(hop: "mediary-b", duration: 16.5, ttfb: 16.4, selfTime: 0.3),
            TimingEntry(hop: "mediary-a", duration: 57.0, ttfb: 56.9, selfTime: 0.4),
        ])
        let s = chain.segments
        #expect(s.map(\.hop) == ["mediary-a", "mediary-b", "gateway-b"])
        #expect(s.map(\.next) == ["mediary-b", "gateway-b", "service"])
        #expect(abs(s[0].milliseconds - 40.2) < 1e-9)
        #expect(abs(s[1].milliseconds - 0.8) < 1e-9)
        #expect(s[2].milliseconds == 15.5)
    }

    @Test func negativeSegmentsAreClamped() {
        let chain = TimingChain(entries: [
            TimingEntry(hop: "b", duration: 10, ttfb: nil, selfTime: 5),
            TimingEntry(hop: "a", duration: 12, ttfb: nil, selfTime: 0),
        ])
        #expect(chain.segments[0].milliseconds == 0)
    }

    @Test func correlationIDs() {
        #expect(
            CorrelationID.traceID(fromTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(
            CorrelationID.traceID(fromTraceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01") == nil)
        #expect(
            CorrelationID.traceID(fromTraceparent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") == nil)
        #expect(CorrelationID.traceID(fromTraceparent: "garbage") == nil)
    }

    @Test func serviceAndMethodFromPath() {
        #expect(HopTimingObserverSource.serviceAndMethod("/pkg.Svc/Do") == ("pkg.Svc", "Do"))
        #expect(HopTimingObserverSource.serviceAndMethod("/index.html") == ("http", "/index.html"))
        #expect(HopTimingObserverSource.serviceAndMethod("/") == ("http", "/"))
        #expect(HopTimingObserverSource.serviceAndMethod("/a/b/c?x=1") == ("http", "/a"))
    }
}
