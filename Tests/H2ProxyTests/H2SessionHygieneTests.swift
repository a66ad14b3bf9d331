import NIOCore
import Testing

@testable import H2Proxy

/// The session's guard rails: re-entrancy, DATA held back for a full socket, the control
/// bytes that pile up meanwhile, and the per-field checks relaxed only where gRPC needs it.
@Suite struct H2SessionHygieneTests {
    @Test func reEnteringEventDeliveryTraps() async {
        await #expect(processExitsWith: .failure) {
            let link = BackToBack()
            _ = try? link.client.submitRequest(BackToBack.request(), endStream: true)
            var events: [H2Event] = []
            try? link.client.produceOutput { try? link.server.receive($0) }
            link.server.withEvents { _ in
                // An owner that drains events from inside an event handler: a bug.
                link.server.withEvents { events.append($0) }
            }
        }
    }

    @Test func eventsCausedByAHandlerAreDeliveredByTheSameCall() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(grpc: false), endStream: false)
        link.client.sendData(streamID: id, BackToBack.bytes(100))
        link.client.endStream(streamID: id, trailers: nil)
        try link.client.produceOutput { try? link.server.receive($0) }
        var seen = 0
        link.server.withEvents { _ in seen += 1 }
        #expect(seen >= 3)  // headers, data, end stream
    }

    @Test func pausedDataIsHeldAndCountedControlBytesGoOut() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(grpc: false), endStream: false)
        try link.pump()
        var response = HeaderBlock()
        response.append(name: ":status", value: "200")
        try link.server.submitResponse(streamID: id, response, endStream: false)
        link.server.sendData(streamID: id, BackToBack.bytes(5000))
        link.server.setDataPaused(true)
        try link.pump()
        // The HEADERS went out; the DATA did not, and was not reported written.
        #expect(link.clientEvents.headers(stream: id).count == 1)
        #expect(link.clientEvents.data(stream: id).readableBytes == 0)
        #expect(link.serverEvents.sent(stream: id) == 0)
        #expect(link.server.queuedDataBytes == 5000)
        #expect(link.server.controlBytesWhilePaused > 0)
        link.server.setDataPaused(false)
        #expect(link.server.controlBytesWhilePaused == 0)
        try link.pump()
        #expect(link.clientEvents.data(stream: id) == BackToBack.bytes(5000))
        #expect(link.serverEvents.sent(stream: id) == 5000)
        #expect(link.server.queuedDataBytes == 0)
    }

    /// A 13-byte RST_STREAM written while paused keeps its whole scratch buffer alive in the
    /// channel's queue: the cap must count that, or a client that floods HEADERS and never reads
    /// makes the proxy hold ~200× the limit.
    @Test func pausedControlFramesCountTheMemoryTheyHold() throws {
        let link = BackToBack()
        let ids = try (0..<5).map { _ in try link.client.submitRequest(BackToBack.request(), endStream: false) }
        try link.pump()
        link.server.setDataPaused(true)
        for id in ids {
            link.server.resetStream(streamID: id, errorCode: H2ErrorCode.refusedStream)
            try link.server.produceOutput { _ in }
        }
        #expect(link.server.controlBytesWhilePaused >= 5 * 4096)
    }

    @Test func queuedDataBytesDropWhenTheStreamIsReset() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(grpc: false), endStream: false)
        link.client.setDataPaused(true)
        link.client.sendData(streamID: id, BackToBack.bytes(1000))
        #expect(link.client.queuedDataBytes == 1000)
        link.client.resetStream(streamID: id, errorCode: H2ErrorCode.cancel)
        try link.pump()
        #expect(link.client.queuedDataBytes == 0)
    }

    @Test func grpcMessageEndingInASpacePasses() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(), endStream: true)
        try link.pump()
        var response = HeaderBlock()
        response.append(name: ":status", value: "200")
        response.append(name: "content-type", value: "application/grpc")
        response.append(name: "grpc-status", value: "3")
        response.append(name: "grpc-message", value: "bad input ")
        try link.server.submitResponse(streamID: id, response, endStream: true)
        try link.pump()
        let got = link.clientEvents.headers(stream: id)
        #expect(got.first?.0.first("grpc-message") == "bad input ")
        #expect(link.clientEvents.closed(stream: id) == 0)
    }

    @Test func teTrailersInAnyCaseIsKeptAsLowerCase() {
        var h = HeaderBlock([(":method", "POST"), ("te", "Trailers"), ("x", "y")])
        HopByHopHeaders.strip(&h)
        #expect(h.pairs.map { "\($0.name)=\($0.value)" } == [":method=POST", "te=trailers", "x=y"])
        var other = HeaderBlock([(":method", "POST"), ("te", "TRAILERS, gzip")])
        HopByHopHeaders.strip(&other)
        #expect(other.first("te") == nil)
    }
}
