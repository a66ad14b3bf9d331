import H2Proxy
import Metrics
import NIOCore
import Testing

@testable import Sidecar

/// The timing observer reads every time from its loop's ``StreamClock``: with a manual clock
/// its `dur`, `ttfb`, `self`, `insight-hops` stamp and end time are exactly what the test set.
@Suite struct HopTimingObserverTests {
    static let t0 = NIODeadline.uptimeNanoseconds(9_000_000_000)
    static let wall: Int64 = 1_800_000_000_000_000

    @Test func aCallIsTimedByTheLoopsClock() throws {
        let clock = StreamClock.manual(at: Self.t0, unixMicros: Self.wall)
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil, clock: clock)
        let request = HeaderBlock([
            (":method", "POST"), (":path", "/pkg.S/M"), ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
        var forwarded = request
        observer.requestHeadersWillForward(&forwarded, receivedAt: Self.t0)
        #expect(forwarded.first("insight-hops")?.contains("t=\"\(Self.wall)\"") == true)
        observer.requestHeadersSent(at: Self.t0 + .milliseconds(1))
        var response = HeaderBlock([(":status", "200"), ("content-type", "application/grpc")])
        observer.responseHeadersWillForward(&response, at: Self.t0 + .milliseconds(4))
        // The end arrives at 9.5 ms; the observer is done with the trailers at 10 ms.
        clock.advance(by: .milliseconds(10))
        var trailers = HeaderBlock([("grpc-status", "0")])
        observer.trailersWillForward(&trailers, trailersOnly: false, receivedAt: Self.t0 + .microseconds(9500))
        observer.streamEnded(.completed, at: clock.streamEnded())

        let own = TimingChain.Segment(hop: "h", next: "service", milliseconds: 8.5)
        #expect(
            observer.summary
                == HopTimingObserver.Summary(
                    dur: 8.5, ttfb: 3, selfTime: 1.5, segments: [own], code: "OK", method: "",
                    endedUnixMicros: Self.wall + 10_000))
        #expect(observer.measurements == StreamMeasurements(segments: [own]))
    }

    @Test func theGRPCTestIsTheCoresOne() throws {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil)
        for contentType in ["application/grpc", "application/grpc+proto", "application/json", nil] {
            var request = HeaderBlock([(":method", "POST"), (":path", "/pkg.S/M")])
            if let contentType { request.append(name: "content-type", value: contentType) }
            let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
            #expect(observer.isGRPC == request.isGRPC)
            #expect(observer.isGRPC == (contentType?.hasPrefix("application/grpc") ?? false))
        }
    }

    /// A plain-HTTP stream the proxy answered itself is recorded with the status it answered:
    /// 503 when no upstream connection had room in time, 502 when none could be had (both
    /// were recorded as 502); a gRPC stream as UNAVAILABLE.
    @Test(arguments: [(false, 503, "503"), (false, 502, "502"), (true, 503, "UNAVAILABLE")])
    func anAnswerOfTheProxyIsRecordedWithItsStatus(grpc: Bool, status: Int, code: String) throws {
        let registry = MetricsRegistry()
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: registry, hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil)
        var request = HeaderBlock([(":method", "GET"), (":path", "/pkg.S/M")])
        if grpc { request.append(name: "content-type", value: "application/grpc") }
        let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
        var forwarded = request
        observer.requestHeadersWillForward(&forwarded, receivedAt: Self.t0)
        observer.streamEnded(.upstreamUnavailable("no slot", status: status), at: Self.t0 + .seconds(1))
        #expect(observer.summary.code == code)
        let requests = registry.render().split(separator: "\n").filter { $0.hasPrefix("insight_requests_total{") }
        #expect(requests.count == 1 && requests[0].contains("code=\"\(code)\""), "\(requests)")
    }

    /// Every histogram of a stream's end offers the stream's correlation id as its exemplar,
    /// stamped with the time the stream ended: the registry's clock is never read.
    @Test func exemplarsCarryTheStreamsIDAndEndTime() throws {
        let clock = StreamClock.manual(at: Self.t0, unixMicros: Self.wall)
        let registry = MetricsRegistry(clock: {
            Issue.record("an exemplar read the registry's clock")
            return 0
        })
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: registry, hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil, clock: clock)
        let id = "4bf92f3577b34da6a3ce929d0e0e4736"
        let request = HeaderBlock([
            (":method", "POST"), (":path", "/pkg.S/M"), ("content-type", "application/grpc"),
            ("traceparent", "00-\(id)-00f067aa0ba902b7-01"),
        ])
        let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
        var forwarded = request
        observer.requestHeadersWillForward(&forwarded, receivedAt: Self.t0)
        #expect(observer.correlationID == id)
        #expect(forwarded.first("insight-id") == nil)
        observer.requestHeadersSent(at: Self.t0)
        var response = HeaderBlock([(":status", "200"), ("content-type", "application/grpc")])
        observer.responseHeadersWillForward(&response, at: Self.t0 + .milliseconds(2))
        clock.advance(by: .milliseconds(3))
        var trailers = HeaderBlock([("grpc-status", "0")])
        observer.trailersWillForward(&trailers, trailersOnly: false, receivedAt: clock.responseEnd())
        observer.streamEnded(.completed, at: clock.streamEnded())

        let text = registry.render(openMetrics: true)
        let exemplar = #" # {trace_id="\#(id)"} "#
        let stamped = text.split(separator: "\n").filter { $0.contains(exemplar) }
        // upstream duration, ttfb, proxy overhead, and the one segment.
        #expect(stamped.count == 4)
        #expect(stamped.allSatisfy { $0.hasSuffix(" 1800000000.003") })
        #expect(stamped.contains { $0.hasPrefix("insight_segment_duration_seconds_bucket{") })
    }

    /// A request without an id leaves with a new `insight-id`, the stream's correlation id.
    @Test func aRequestWithoutAnIDGetsOne() throws {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil)
        for existing in [nil, "not-an-id"] {
            var request = HeaderBlock([(":method", "GET"), (":path", "/")])
            if let existing { request.append(name: "insight-id", value: existing) }
            let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
            observer.requestHeadersWillForward(&request, receivedAt: Self.t0)
            let id = try #require(request.first("insight-id"))
            #expect(CorrelationID.isHexID(id))
            #expect(observer.correlationID == id)
            #expect(request.pairs.filter { $0.name == "insight-id" }.count == 1)
        }
    }

    /// Repeated `insight-id` fields leave as one, carrying the correlation id; two
    /// `traceparent` fields are not a correlation id.
    @Test func oneInsightIDGoesUpstream() throws {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil)
        let a = "0123456789abcdef0123456789abcdef"
        let b = "fedcba9876543210fedcba9876543210"
        let t = "4bf92f3577b34da6a3ce929d0e0e4736"
        let tp = "00-\(t)-00f067aa0ba902b7-01"
        let cases: [([(String, String)], String)] = [
            ([("insight-id", a), ("insight-id", b)], a),
            ([("traceparent", tp), ("insight-id", a), ("insight-id", a)], t),
            ([("traceparent", tp), ("traceparent", tp), ("insight-id", a), ("insight-id", b)], a),
        ]
        for (fields, want) in cases {
            var request = HeaderBlock([(":method", "POST"), (":path", "/p.S/M")] + fields)
            let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
            observer.requestHeadersWillForward(&request, receivedAt: Self.t0)
            #expect(observer.correlationID == want)
            #expect(request.pairs.filter { $0.name == "insight-id" }.map(\.value) == [want])
        }
    }

    /// A call whose request headers never went upstream has no `dur` or `ttfb`.
    @Test func aCallNeverSentHasNoDuration() throws {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil)
        for sent in [false, true] {
            var request = HeaderBlock([(":method", "POST"), (":path", "/p.S/M")])
            let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
            observer.requestHeadersWillForward(&request, receivedAt: Self.t0)
            if sent { observer.requestHeadersSent(at: Self.t0 + .milliseconds(100)) }
            observer.streamEnded(.downstreamReset(8), at: Self.t0 + .milliseconds(700))
            #expect(observer.summary.dur == (sent ? 600 : nil))
            #expect(observer.summary.ttfb == nil)
        }
    }
}
