import Metrics
import NIOCore
import Testing

@testable import H2Proxy
@testable import Sidecar

/// Fields whose value is new on every call go out as HPACK "never indexed", so that they take
/// no dynamic-table entry at any hop; the sidecar's constant `insight-chain` stays indexable.
@Suite struct NeverIndexedFieldsTests {
    private static func flags(_ block: HeaderBlock, _ name: String) -> [UInt8] {
        block.fields.indices.filter { block.nameString(at: $0) == name }.map { block.fields[$0].flags }
    }

    @Test func perCallFieldsAreNeverIndexed() throws {
        let source = HopTimingObserverSource(
            options: TimingOptions(hop: "h", region: "r"),
            metrics: TrafficMetrics(registry: MetricsRegistry(), hop: "h", region: "r", headerErrorReasons: []),
            accessLog: nil, clock: StreamClock.manual(at: .uptimeNanoseconds(1_000_000_000)))
        var request = HeaderBlock([
            (":method", "POST"), (":path", "/pkg.S/M"), ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        let observer = try #require(source.makeObserver(for: request) as? HopTimingObserver)
        observer.requestHeadersWillForward(&request, receivedAt: .uptimeNanoseconds(1_000_000_000))
        #expect(Self.flags(request, "insight-id") == [TimingHeaders.neverIndexed])
        #expect(Self.flags(request, "insight-hops") == [TimingHeaders.neverIndexed])
        #expect(Self.flags(request, ":path") == [0])

        var response = HeaderBlock([(":status", "200"), ("content-type", "application/grpc")])
        observer.responseHeadersWillForward(&response, at: .uptimeNanoseconds(1_001_000_000))
        #expect(Self.flags(response, "insight-chain") == [0])
        var trailers = HeaderBlock([("grpc-status", "0")])
        observer.trailersWillForward(&trailers, trailersOnly: false, receivedAt: .uptimeNanoseconds(1_002_000_000))
        #expect(Self.flags(trailers, "insight-timing") == [TimingHeaders.neverIndexed])
    }
}
