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
