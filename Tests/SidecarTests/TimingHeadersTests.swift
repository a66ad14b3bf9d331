import H2Proxy
import Metrics
import Testing

@testable import Sidecar

@Suite struct TimingHeadersTests {
    func block(_ pairs: [(String, String)]) -> HeaderBlock { HeaderBlock(pairs) }

    @Test func hopStampsRoundTrip() throws {
        var problems: [TimingHeaders.Problem] = []
        let stamp = HopStamp(hop: "mediary-a", region: "eu-west", epochMicros: 1_796_000_000_123_456)
        let text = try #require(TimingHeaders.serialize([stamp.item]))
        #expect(text == "mediary-a;region=eu-west;t=\"1796000000123456\"")
        let items = try #require(
            TimingHeaders.parseList("insight-hops", in: self.block([("insight-hops", text)]), problems: &problems))
        #expect(items.compactMap(HopStamp.init) == [stamp])
        #expect(problems.isEmpty)
    }

    @Test func timingEntriesParseAcrossFieldLines() throws {
        var problems: [TimingHeaders.Problem] = []
        let b = self.block([
            ("insight-timing", "gateway-b;dur=15.2;ttfb=15.1;self=0.2"),
            ("insight-timing", "mediary-b;dur=16.000;ttfb=15.9;self=0.3"),
        ])
        let items = try #require(TimingHeaders.parseList("insight-timing", in: b, problems: &problems))
        let entries = items.compactMap(TimingEntry.init)
        #expect(entries.map(\.hop) == ["gateway-b", "mediary-b"])
        #expect(abs(entries[0].duration - 15.2) < 1e-9)
        #expect(abs(entries[1].selfTime - 0.3) < 1e-9)
        #expect(problems.isEmpty)
    }

    @Test func ownEntrySerialisesMillisecondsWithMicroseconds() throws {
        let e = TimingEntry(hop: "mediary-a", durationNanos: 41_234_567, ttfbNanos: 40_000_000, selfNanos: 123_999)
        #expect(TimingHeaders.serialize([e.item]) == "mediary-a;dur=41.234;ttfb=40.0;self=0.123")
    }

    @Test(arguments: [
        ("(((", TimingHeaders.Problem.malformed),
        ("a;dur=1;self=1, \"unterminated", .malformed),
        ("a;dur=1;self=1,,b", .malformed),
        ("\u{7f}", .malformed),
        (String(repeating: "a;dur=1;self=1, ", count: 400), .tooLarge),
        ((0..<40).map { "h\($0);dur=1;self=0" }.joined(separator: ", "), .tooManyEntries),
        ("(a b);dur=1", .invalidItem),
    ])
    func hostileInputIsReportedNotTrusted(value: String, expected: TimingHeaders.Problem) {
        var problems: [TimingHeaders.Problem] = []
        let items = TimingHeaders.parseList(
            "insight-timing", in: self.block([("insight-timing", value)]), problems: &problems)
        #expect(problems.contains(expected))
        #expect((items?.count ?? 0) <= TimingHeaders.maxEntries)
    }

    @Test(arguments: [
        "a", "a;dur=-1;self=0", "a;dur=1", "a;self=1", "a;dur=\"x\";self=1", "1;dur=1;self=1", "a;dur=1;self=1;ttfb=-2",
        "?1;dur=1;self=1",
    ])
    func invalidTimingItemsAreRejected(value: String) {
        var problems: [TimingHeaders.Problem] = []
        let items =
            TimingHeaders.parseList("insight-timing", in: self.block([("insight-timing", value)]), problems: &problems)
            ?? []
        #expect(items.compactMap(TimingEntry.init).isEmpty)
    }

    /// Seeds 1...2000, one header value each; replay one with
    /// `INSIGHT_TEST_SEED=N swift test --filter TimingHeadersTests/randomBytesNeverCrash`.
    @Test func randomBytesNeverCrash() {
        let alphabet = Array("abc;=,\"()?*1.-: \t\\".utf8) + [0x00, 0xff, 0x80]
        for seed in SeededRandom.seeds(count: 2000) {
            var rng = SeededRandom(seed: seed)
            let n = Int.random(in: 0..<80, using: &rng)
            let bytes = (0..<n).map { _ in alphabet.randomElement(using: &rng)! }
            var block = HeaderBlock()
            bytes.withUnsafeBytes { raw in
                "insight-timing".utf8CString.withUnsafeBytes { name in
                    block.append(name: UnsafeRawBufferPointer(rebasing: name.dropLast()), value: raw)
                }
            }
            var problems: [TimingHeaders.Problem] = []
            let items = TimingHeaders.parseList("insight-timing", in: block, problems: &problems) ?? []
            _ = items.compactMap(TimingEntry.init)
            _ = items.compactMap(HopStamp.init)
        }
    }
}

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
