import H2Proxy
import Metrics
import NIOCore
import Testing

@testable import Sidecar

/// The observer reads a timing header written as sidecars write it (one field line, a plain
/// list, every item valid) on a fast path that appends to its bytes; any other header goes
/// through `TimingHeaders.parseListKeepingText`. The same list split over two field lines
/// takes the other path: both must leave the same headers, chain and metrics.
@Suite struct TimingFastPathTests {
    static let t0 = NIODeadline.uptimeNanoseconds(9_000_000_000)

    struct Outcome: Equatable {
        var hops: String?
        var chain: String?
        var timing: String?
        var segments: [TimingChain.Segment]
        var metrics: [Substring]
    }

    /// One call through a fresh observer with `hops`, `chain` and `timing` as received, each
    /// a list of field lines.
    static func run(hops: [String], chain: [String], timing: [String], hopLimit: Int = 8) throws -> Outcome {
        let registry = MetricsRegistry()
        var options = TimingOptions(hop: "outer", region: "r1")
        options.hopLimit = hopLimit
        let source = HopTimingObserverSource(
            options: options,
            metrics: TrafficMetrics(
                registry: registry, hop: "outer", region: "r1",
                headerErrorReasons: TimingHeaders.Problem.allCases.map(\.rawValue)),
            accessLog: nil, clock: StreamClock.manual(at: Self.t0, unixMicros: 1_800_000_000_000_000))
        var request = HeaderBlock([
            (":method", "POST"), (":path", "/pkg.S/M"), ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        for line in hops { request.append(name: "insight-hops", value: line) }
        let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
        observer.requestHeadersWillForward(&request, receivedAt: Self.t0)
        observer.requestHeadersSent(at: Self.t0 + .microseconds(100))
        var response = HeaderBlock([(":status", "200"), ("content-type", "application/grpc")])
        for line in chain { response.append(name: "insight-chain", value: line) }
        observer.responseHeadersWillForward(&response, at: Self.t0 + .milliseconds(3))
        var trailers = HeaderBlock([("grpc-status", "0")])
        for line in timing { trailers.append(name: "insight-timing", value: line) }
        observer.trailersWillForward(&trailers, trailersOnly: false, receivedAt: Self.t0 + .milliseconds(9))
        observer.streamEnded(.completed, at: Self.t0 + .milliseconds(10))
        return Outcome(
            hops: Self.combined("insight-hops", in: request), chain: Self.combined("insight-chain", in: response),
            timing: Self.combined("insight-timing", in: trailers), segments: observer.summary.segments,
            metrics: registry.render().split(separator: "\n").filter {
                $0.hasPrefix("insight_timing_header_errors_total")
                    || $0.hasPrefix("insight_segment_duration_seconds_count")
                    || $0.hasPrefix("insight_incomplete")
            })
    }

    /// Every field line named `name`, joined as one list (`nil` if none).
    static func combined(_ name: String, in block: HeaderBlock) -> String? {
        let values = (0..<block.count).filter { block.nameString(at: $0) == name }.map {
            String(decoding: block.value(at: $0), as: UTF8.self)
        }
        return values.isEmpty ? nil : values.joined(separator: ", ")
    }

    /// `value` as two field lines, split at its first `, ` (the library path reads them as one list).
    static func split(_ value: String) -> [String] {
        guard let r = value.range(of: ", ") else { return [value] }
        return [String(value[..<r.lowerBound]), String(value[r.upperBound...])]
    }

    static let cases: [(hops: String, chain: String, timing: String)] = [
        (
            "client-gw;region=r0;t=\"1800000000000000\"", "inner, mid",
            "inner;dur=5.5;ttfb=5.0;self=0.1, mid;dur=7.25;self=0.2"
        ),
        ("a;region=x;t=\"1\", b;region=y;t=2", "b, c", "c;dur=1;self=0, b;dur=3.000;ttfb=2.5;self=0.05"),
        ("\"Hop A\";t=\"5\", b", "\"Hop A\", b", "b;dur=0.001;self=0, \"Hop A\";dur=1.5;self=0.001"),
        // Invalid items: the fast path declines and both readings go through the library.
        ("a;region=?1, b", "a, 1", "x;dur=a;self=0, y;dur=1;self=0"),
        ("a, b;t=1.5", "a, b", "x;dur=1;self=-0, y"),
        // More entries than the chain names, fewer, and a chain longer than the hop limit.
        ("a, b, c, d", "x, y, z", "x;dur=1;self=0"),
    ]

    @Test(arguments: 0..<cases.count)
    func oneFieldLineAndTwoFieldLinesLeaveTheSameHeadersAndMetrics(index: Int) throws {
        let c = Self.cases[index]
        for hopLimit in [2, 8] {
            let fast = try Self.run(hops: [c.hops], chain: [c.chain], timing: [c.timing], hopLimit: hopLimit)
            let library = try Self.run(
                hops: Self.split(c.hops), chain: Self.split(c.chain), timing: Self.split(c.timing), hopLimit: hopLimit)
            // The hop stamp's time is the manual clock's: the same in both runs.
            #expect(fast == library, "case \(index), hop limit \(hopLimit)")
        }
    }

    /// The fast path's output for a chain as sidecars write it, spelled out.
    @Test func aWrittenChainIsAppendedToInPlace() throws {
        let out = try Self.run(
            hops: ["client-gw;region=r0;t=\"1\""], chain: ["inner, mid"],
            timing: ["inner;dur=5.5;ttfb=5.0;self=0.1, mid;dur=7.25;self=0.2"])
        #expect(out.hops == "client-gw;region=r0;t=\"1\", outer;region=r1;t=\"1800000000000000\"")
        #expect(out.chain == "inner, mid, outer")
        #expect(out.timing == "inner;dur=5.5;ttfb=5.0;self=0.1, mid;dur=7.25;self=0.2, outer;dur=8.9;ttfb=2.9;self=0.1")
        #expect(out.segments.map(\.hop) == ["outer", "mid", "inner"])
        #expect(out.segments.map(\.next) == ["mid", "inner", "service"])
    }

    /// Everything sidecars write is read by the fast path (one line), nothing split over two.
    @Test func whatSidecarsWriteTakesTheFastPath() {
        for value in TimingListParserTests.written {
            let one = HeaderBlock([("insight-timing", value)])
            #expect(
                TimingHeaders.withPlainList("insight-timing", in: one) { items, _ in items.count } != nil, "\(value)")
            let two = HeaderBlock([("insight-timing", value), ("insight-timing", value)])
            #expect(TimingHeaders.withPlainList("insight-timing", in: two) { items, _ in items.count } == nil)
        }
    }

    /// One call with `timing` from two inner hops through a fresh observer of `source`; its
    /// segments. The observer is gone when this returns unless `keep` holds it.
    static func segments(
        through source: HopTimingObserverSource, timing: String, keep: inout [HopTimingObserver]
    ) throws -> [TimingChain.Segment] {
        var request = HeaderBlock([(":method", "POST"), (":path", "/pkg.S/M"), ("content-type", "application/grpc")])
        let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
        observer.requestHeadersWillForward(&request, receivedAt: Self.t0)
        observer.requestHeadersSent(at: Self.t0 + .microseconds(100))
        var response = HeaderBlock([(":status", "200"), ("insight-chain", "inner, mid")])
        observer.responseHeadersWillForward(&response, at: Self.t0 + .milliseconds(3))
        var trailers = HeaderBlock([("grpc-status", "0"), ("insight-timing", timing)])
        observer.trailersWillForward(&trailers, trailersOnly: false, receivedAt: Self.t0 + .milliseconds(9))
        observer.streamEnded(.completed, at: Self.t0 + .milliseconds(10))
        keep.append(observer)
        return observer.chainSegments
    }

    /// The inner hops' entries are read into an array the loop's source keeps: an observer
    /// gives it back when it goes, the next stream takes it again, and streams alive together
    /// have arrays of their own. An entry the fast path refuses gives the array back at once.
    @Test func innerEntriesArraysAreKeptForLaterStreams() throws {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "outer", region: "r1"),
            metrics: TrafficMetrics(
                registry: MetricsRegistry(), hop: "outer", region: "r1",
                headerErrorReasons: TimingHeaders.Problem.allCases.map(\.rawValue)),
            accessLog: nil, clock: StreamClock.manual(at: Self.t0, unixMicros: 1_800_000_000_000_000))
        let timing = "inner;dur=5.5;ttfb=5.0;self=0.1, mid;dur=7.25;self=0.2"
        var kept: [HopTimingObserver] = []
        let first = try Self.segments(through: source, timing: timing, keep: &kept)
        #expect(first.map(\.hop) == ["outer", "mid", "inner"])
        #expect(source.spareEntryArrays == 0, "the live observer holds its array")
        kept.removeAll()
        #expect(source.spareEntryArrays == 1)
        for _ in 0..<5 {
            let before = source.spareEntryArrays
            var alive: [HopTimingObserver] = []
            #expect(try Self.segments(through: source, timing: timing, keep: &alive) == first)
            #expect(source.spareEntryArrays == before - 1, "taken again, not made")
            #expect(try Self.segments(through: source, timing: timing, keep: &alive) == first)
            #expect(source.spareEntryArrays == max(0, before - 2))
            alive.removeAll()
            #expect(source.spareEntryArrays == max(before, 2))
        }
        // A plain list with an entry that is not a timing entry (no `self`): the library path
        // reads it, and the array the fast path took is back with the source.
        var alive: [HopTimingObserver] = []
        let refused = try Self.segments(through: source, timing: "inner;dur=5.5, mid;dur=7.25;self=0.2", keep: &alive)
        #expect(refused.isEmpty, "incomplete chain")
        #expect(source.spareEntryArrays == 2)
    }
}
