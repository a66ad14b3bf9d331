import H2Proxy
import RawStructuredFieldValues
import Testing

@testable import Sidecar

/// ``TimingListParser`` against swift-http-structured-headers: wherever the byte-level parser
/// accepts a value, the library must accept it too and give the same items.
@Suite struct TimingListParserTests {
    /// The library's items for `bytes`, or `nil` where it rejects them or the list holds an
    /// inner list (never accepted by ``TimingListParser``).
    static func library(_ bytes: [UInt8]) -> [Item]? {
        var parser = StructuredFieldValueParser(bytes)
        guard let list = try? parser.parseListFieldValue() else { return nil }
        var items: [Item] = []
        for member in list {
            guard case .item(let item) = member else { return nil }
            items.append(item)
        }
        return items
    }

    static func fast(_ bytes: [UInt8]) -> [Item]? {
        bytes.withUnsafeBytes { TimingListParser.items($0) }
    }

    /// Fails with the input when the fast path accepts what the library does not, or reads it otherwise.
    static func expectAgreement(
        _ bytes: [UInt8], seed: UInt64? = nil, sourceLocation: SourceLocation = #_sourceLocation
    )
        -> Bool
    {
        guard let fast = Self.fast(bytes) else { return false }
        let library = Self.library(bytes)
        let input =
            "input \(String(decoding: bytes, as: UTF8.self).debugDescription) seed \(seed.map(String.init) ?? "-")"
        #expect(library == fast, "\(input)", sourceLocation: sourceLocation)
        // The typed readers of the plain items read what the library's items say.
        let typed = bytes.withUnsafeBytes { raw in
            TimingListParser.plainItems(raw).map { items in
                items.map { ($0.hopName(in: raw), TimingEntry($0, in: raw), $0.isHopStamp(in: raw), $0.hasHopName) }
            }
        }
        #expect(typed?.count == library?.count, "\(input)", sourceLocation: sourceLocation)
        // Read into an array that held another list (as the observer reuses its loop's): the
        // same items, nothing left of the other list.
        var scratch: [TimingListParser.PlainItem] = []
        let other = Array("a;dur=1;self=2, b, c;x=\"y\"".utf8)
        #expect(other.withUnsafeBytes { TimingListParser.plainItems($0, into: &scratch) } && scratch.count == 3)
        let reused = bytes.withUnsafeBytes { raw in
            TimingListParser.plainItems(raw, into: &scratch)
                ? scratch.map { ($0.hopName(in: raw), TimingEntry($0, in: raw)) } : nil
        }
        #expect(reused?.count == typed?.count, "\(input)", sourceLocation: sourceLocation)
        if let reused, let typed, reused.count == typed.count {
            for (a, b) in zip(reused, typed) {
                #expect(a.0 == b.0 && a.1 == b.1, "\(input)", sourceLocation: sourceLocation)
            }
        }
        if let typed, let library, typed.count == library.count {
            for (read, item) in zip(typed, library) {
                #expect(read.0 == TimingHeaders.hopName(item), "\(input)", sourceLocation: sourceLocation)
                #expect(read.1 == TimingEntry(item), "\(input)", sourceLocation: sourceLocation)
                #expect(read.2 == (HopStamp(item) != nil), "\(input)", sourceLocation: sourceLocation)
                #expect(read.3 == (read.0 != nil), "\(input)", sourceLocation: sourceLocation)
            }
        }
        return true
    }

    /// Items of `bytes` the typed readers take as a timing entry and as a hop stamp.
    static func typedCounts(_ bytes: [UInt8]) -> (entries: Int, stamps: Int) {
        bytes.withUnsafeBytes { raw in
            let items = TimingListParser.plainItems(raw) ?? []
            return (
                items.filter { TimingEntry($0, in: raw) != nil }.count, items.filter { $0.isHopStamp(in: raw) }.count
            )
        }
    }

    /// What sidecars write (OwnItems, HopStamp, TimingEntry; Docs/protocol.md), and how a
    /// chain of them looks when combined. The fast path must take all of them.
    static let written: [String] = {
        let own = OwnItems(hop: "mediary-a", region: "eu-west")
        let quoted = OwnItems(hop: "Hop With Space", region: "r 1")
        let entries = [
            TimingEntry(hop: "mediary-a", durationNanos: 41_234_567, ttfbNanos: 40_000_000, selfNanos: 123_999),
            TimingEntry(hop: "g", durationNanos: 0, ttfbNanos: nil, selfNanos: 0),
            TimingEntry(hop: "edge-1", durationNanos: 999_999_999_999_999, ttfbNanos: 1_000, selfNanos: 10_000),
            TimingEntry(hop: "Hop With Space", durationNanos: 5_500_000, ttfbNanos: nil, selfNanos: 1_000_000),
        ]
        var out = [
            own.hops(epochMicros: 1_796_000_000_123_456), own.hops(epochMicros: 0), quoted.hops(epochMicros: 7),
            own.chainItem, quoted.chainItem,
        ]
        out += entries.map(own.timing)
        out += entries.map { TimingHeaders.serialize([$0.item])! }
        out.append(entries.map(own.timing).joined(separator: ", "))
        out.append([own.chainItem, quoted.chainItem, "gateway-b"].joined(separator: ", "))
        out.append(
            [own.hops(epochMicros: 1), quoted.hops(epochMicros: 2), "g;region=eu;t=\"3\""].joined(separator: ", "))
        out += [
            "gateway-b;dur=15.2;ttfb=15.1;self=0.2, mediary-b;dur=16.000;ttfb=15.9;self=0.3",
            "mediary-a;region=eu-west;t=\"1796000000123456\"", "*h:1/x", "a;b",
        ]
        return out
    }()

    @Test func everythingSidecarsWriteTakesTheFastPathAndReadsAsTheLibraryReadsIt() {
        for text in Self.written {
            #expect(Self.fast(Array(text.utf8)) != nil, "fell back: \(text)")
            _ = Self.expectAgreement(Array(text.utf8))
        }
    }

    /// Outside the subset (left to the library): escapes, inner lists, signs, other bare
    /// items, a repeated parameter key, more than three parameters.
    @Test(arguments: ["\"a\\\"b\"", "(a b)", "a;n=-1", "?1", "a;b=1;b=2", "a;b;c;d;e", ":aGk=:"])
    func leftToTheLibrary(text: String) {
        #expect(Self.fast(Array(text.utf8)) == nil)
    }

    @Test(arguments: [
        // Whitespace where RFC 9651 allows it (and where it does not).
        " a", "a ", "a , b", "a,\tb", "a\t,b", "\ta", "a;\tb=1", "a; b=1", "a ;b=1", "a;b =1", "a;b= 1", "", "   ",
        "a,", "a,,b", ",a", "a, ", "a b",
        // Numbers at and past the limits, signs, fractions.
        "a;n=123456789012345", "a;n=1234567890123456", "a;n=123456789012.123", "a;n=1234567890123.1",
        "a;n=1.1234", "a;n=1.", "a;n=.5", "a;n=-1", "a;n=-1.5", "a;n=007", "a;n=0.000", "a;n=1.50", "a;n=1.2.3",
        "1", "1.5", "12abc", "a;n=1a",
        // Strings and escapes.
        "\"x\"", "\"\"", "\"a\\\"b\"", "\"a\\\\b\"", "\"a\\b\"", "\"unterminated", "\"\u{7f}\"", "\"tab\t\"",
        "a;s=\"\"", "a;s=\"x y\"",
        // Tokens, keys, other bare items.
        "A", "*", "a:b/c", "a!#$%&'*+-.^_`|~", "a;B=1", "a;*=1", "a;k_-.*9=1", "a;1=2", "a;b=1;b=2", "a;b;b=3",
        "?1", "a;b=?1", ":aGVsbG8=:", "@1659578233", "%\"x\"", "(a b)", "a;b=(c)", "a;b=c;d", "a;=1",
        // Bytes outside ASCII.
        "h\u{e9}", "a;b=\u{e9}", "\"\u{e9}\"",
    ])
    func goldenInputsAgree(text: String) {
        _ = Self.expectAgreement(Array(text.utf8))
    }

    /// Seeds 1...3000: random lists from the grammar's pieces, some of them mutated by a byte;
    /// replay one with `INSIGHT_TEST_SEED=N swift test --filter TimingListParserTests`.
    @Test func seededRandomInputsAgree() {
        let pieces: [String] = [
            "a", "hop-1", "Gateway", "*x", "a:b/c", "dur", "self", "ttfb", "region", "t", "1", "0", "15.2", "0.123",
            "999999999999.999", "1234567890123456", "1.", ".5", "-2", "\"x\"", "\"1796000000123456\"", "\"a\\\"\"",
            "\"",
            ";", ";", ";", "=", "=", ",", ", ", " ", "\t", "?1", "(", ")", ":", "\\", "\u{e9}", "\u{0}", "A",
        ]
        let mutations = Array("abc;=,\"()?*1.-: \t\\".utf8) + [0x00, 0x7f, 0xff]
        var accepted = 0
        // Items the typed readers took as a timing entry or a hop stamp: the comparison covers
        // valid ones, not only rejections.
        var typedEntries = 0
        var typedStamps = 0
        let seeds = SeededRandom.seeds(count: 3000)
        for seed in seeds {
            var rng = SeededRandom(seed: seed)
            var bytes: [UInt8]
            if Bool.random(using: &rng) {
                // A list in the written form, then maybe one byte changed, dropped or added.
                bytes = Array(Self.written.randomElement(using: &rng)!.utf8)
                if !bytes.isEmpty, Int.random(in: 0..<4, using: &rng) > 0 {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: bytes[i] = mutations.randomElement(using: &rng)!
                    case 1: bytes.remove(at: i)
                    default: bytes.insert(mutations.randomElement(using: &rng)!, at: i)
                    }
                }
            } else {
                bytes = []
                for _ in 0..<Int.random(in: 0..<12, using: &rng) {
                    bytes += Array(pieces.randomElement(using: &rng)!.utf8)
                }
            }
            if Self.expectAgreement(bytes, seed: seed) { accepted += 1 }
            let counts = Self.typedCounts(bytes)
            typedEntries += counts.entries
            typedStamps += counts.stamps
        }
        // The comparison means something only if the fast path accepted a good share.
        if seeds.count > 1 { #expect(accepted > seeds.count / 4, "accepted \(accepted) of \(seeds.count)") }
        if seeds.count > 1 { #expect(typedEntries > 100 && typedStamps > 100, "\(typedEntries) \(typedStamps)") }
    }

    /// `parseListKeepingText` as a whole (field lines combined, size and count limits, the
    /// problems reported) against the library's reading of the same lines.
    @Test func parseListKeepingTextMatchesTheLibraryPath() {
        let lines = Self.written + ["a,,b", "(a b)", "\"esc\\\"\"", "", " ", "a;n=-1"]
        for seed in SeededRandom.seeds(count: 1000) {
            var rng = SeededRandom(seed: seed)
            var values = (0..<Int.random(in: 1...3, using: &rng)).map { _ in lines.randomElement(using: &rng)! }
            if Int.random(in: 0..<10, using: &rng) == 0 {
                values = [
                    (0..<Int.random(in: 30...40, using: &rng)).map { "h\($0);dur=1;self=0" }.joined(separator: ", ")
                ]
            }
            if Int.random(in: 0..<20, using: &rng) == 0 { values.append(String(repeating: "a, ", count: 1400) + "a") }
            let block = HeaderBlock(values.map { ("insight-timing", $0) })
            var problems: [TimingHeaders.Problem] = []
            let got = TimingHeaders.parseListKeepingText("insight-timing", in: block, problems: &problems)

            var expectedProblems: [TimingHeaders.Problem] = []
            let combined = Array(values.joined(separator: ", ").utf8)
            let expected: (items: [Item], validText: String?)?
            if combined.count > TimingHeaders.maxFieldBytes {
                expectedProblems.append(.tooLarge)
                expected = nil
            } else {
                expected = TimingHeaders.parseWithLibrary(combined, problems: &expectedProblems)
            }
            #expect(got?.items == expected?.items, "seed \(seed): \(values)")
            #expect(got?.validText == expected?.validText, "seed \(seed): \(values)")
            #expect(problems == expectedProblems, "seed \(seed): \(values)")
        }
    }
}
