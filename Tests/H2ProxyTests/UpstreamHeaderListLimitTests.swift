import NIOCore
import Testing

@testable import H2Proxy

/// A request whose header list is over the `SETTINGS_MAX_HEADER_LIST_SIZE` the upstream
/// advertised is answered by the proxy (gRPC RESOURCE_EXHAUSTED, HTTP 431) and never sent: a
/// peer may answer an oversized list by closing the connection every other stream shares.
@Suite struct UpstreamHeaderListLimitTests {
    /// The upstream advertises 400 bytes; names + values + 32 per field.
    static let limit = 400

    static func harness() -> BridgeHarness {
        let h = BridgeHarness()
        h.upstreamSettings.maxHeaderListSize = Self.limit
        h.upstreamSetup = { peer in peer.onEvent = Peer.answering { peer, id, _ in peer.respondGRPC(id) } }
        return h
    }

    static func request(grpc: Bool, padding: Int) -> HeaderBlock {
        var block = BackToBack.request(grpc: grpc)
        block.append(name: "x-padding", value: String(repeating: "p", count: padding))
        return block
    }

    @Test(arguments: [true, false])
    func aRequestOverTheUpstreamsLimitIsAnsweredHereAndNotSent(grpc: Bool) throws {
        let h = Self.harness()
        let client = try h.connectClient()
        // A small call first: the upstream connection is up and its SETTINGS are known.
        let small = try client.open(Self.request(grpc: grpc, padding: 10))
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        #expect(upstream.requests.count == 1)

        let big = Self.request(grpc: grpc, padding: 200)
        #expect(big.listSize > Self.limit)  // and far within the proxy's own 64 KiB
        let id = try client.open(big)
        try h.pump()
        if grpc {
            let status = try #require(client.grpcStatus(id))
            #expect(status.status == "8")
            #expect(status.message?.contains("SETTINGS_MAX_HEADER_LIST_SIZE") == true)
        } else {
            #expect(client.headers(id).first?.0.first(":status") == "431")
            // The cause, not "upstream unavailable": the upstream is fine.
            #expect(String(buffer: client.data(id)).hasPrefix("request header list of "))
        }
        // Never sent; counted; the shared connection and the other calls are untouched.
        #expect(upstream.requests.count == 1)
        #expect(upstream.goAways.isEmpty)
        #expect(h.metrics.headerListTooLarge.value == 1)
        #expect(h.metrics.upstreamUnavailable.value == 0)
        let after = try client.open(Self.request(grpc: grpc, padding: 10))
        try h.pump()
        #expect(upstream.requests.count == 2)
        if grpc {
            #expect(client.grpcStatus(small)?.status == "0")
            #expect(client.grpcStatus(after)?.status == "0")
        }
        #expect(h.upstreams.count == 1)
        try StreamClockTests.finish(h)
    }
}
