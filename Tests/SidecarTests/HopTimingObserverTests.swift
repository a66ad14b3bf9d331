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
}
