import H2Proxy
import Metrics
import RawStructuredFieldValues
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

    /// `String(PseudoDecimal)` of `ms` rounded to µs: how `OwnItems` wrote decimals before.
    static func libraryDecimal(_ ms: Double) -> String {
        let micros = max(0, min(Int64((ms * 1000).rounded()), 999_999_999_999))
        return String(PseudoDecimal(mantissa: Int(micros), exponent: -3))
    }

    /// Seeds 1...2000: the decimals written byte by byte are the library's, and so is the item
    /// (with and without `ttfb`, hops that are tokens and hops that are quoted).
    @Test func timingItemsWrittenInPlaceMatchTheLibraryOnRandomValues() {
        let owns = [OwnItems(hop: "mediary-a", region: "eu-west"), OwnItems(hop: "Hop With Space", region: "r")]
        let edges: [Double] = [
            0, 0.0004, 0.0005, 0.001, 0.01, 0.05, 0.1, 1, 1.05, 1.5, 10, 40, 999_999_999.999, 1e12, -3,
        ]
        func value(_ rng: inout SeededRandom) -> Double {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: edges.randomElement(using: &rng)!
            case 1: Double(Int.random(in: 0..<1_000_000, using: &rng)) / 1000
            case 2: Double.random(in: 0..<1e10, using: &rng)
            default: Double.random(in: 0..<2, using: &rng)
            }
        }
        for seed in SeededRandom.seeds(count: 2000) {
            var rng = SeededRandom(seed: seed)
            let d = value(&rng)
            var written = [UInt8](repeating: 0, count: 32)
            var n = 0
            written.withUnsafeMutableBytes { OwnItems.writeDecimal(d, to: $0, at: &n) }
            #expect(String(decoding: written[0..<n], as: UTF8.self) == Self.libraryDecimal(d), "seed \(seed): \(d)")
            let own = owns.randomElement(using: &rng)!
            let e = TimingEntry(
                hop: own.chainItem == owns[0].chainItem ? "mediary-a" : "Hop With Space", duration: d,
                ttfb: Bool.random(using: &rng) ? value(&rng) : nil, selfTime: value(&rng))
            // What the item was before: the prefix and the library's decimals.
            var expected = String(decoding: own.timingPrefix, as: UTF8.self) + Self.libraryDecimal(e.duration)
            if let t = e.ttfb { expected += ";ttfb=" + Self.libraryDecimal(t) }
            expected += ";self=" + Self.libraryDecimal(e.selfTime)
            #expect(own.timing(e) == expected, "seed \(seed)")
        }
        // On whole microseconds, the item is the library's serialisation of the entry.
        for seed in SeededRandom.seeds(count: 500) {
            var rng = SeededRandom(seed: seed)
            let ms = { (rng: inout SeededRandom) in Double(Int.random(in: 0..<1_000_000_000, using: &rng)) / 1000 }
            let e = TimingEntry(
                hop: "mediary-a", duration: ms(&rng), ttfb: Bool.random(using: &rng) ? ms(&rng) : nil,
                selfTime: ms(&rng))
            #expect(owns[0].timing(e) == TimingHeaders.serialize([e.item]), "seed \(seed)")
        }
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
