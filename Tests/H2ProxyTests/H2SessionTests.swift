internal import CNGHTTP2
import NIOCore
import Testing

@testable import H2Proxy

@Suite("H2Session back to back")
struct H2SessionTests {
    @Test func requestResponseWithTrailers() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(), endStream: false)
        link.client.sendData(streamID: id, BackToBack.bytes(1000))
        link.client.endStream(streamID: id, trailers: nil)
        try link.pump()

        let req = link.serverEvents.headers(stream: id)
        #expect(req.count == 1)
        #expect(req.first?.1 == .request)
        #expect(req.first?.0.first(":path") == "/svc/Method")
        #expect(link.serverEvents.data(stream: id) == BackToBack.bytes(1000))
        #expect(link.serverEvents.endedStream(id))

        var response = HeaderBlock()
        response.append(name: ":status", value: "200")
        response.append(name: "content-type", value: "application/grpc")
        try link.server.submitResponse(streamID: id, response, endStream: false)
        link.server.sendData(streamID: id, BackToBack.bytes(70000, seed: 7))
        var trailers = HeaderBlock()
        trailers.append(name: "grpc-status", value: "0")
        trailers.append(name: "x-trace-bin", value: "AAEC")
        link.server.endStream(streamID: id, trailers: trailers)
        // Manual flow control: the client must consume for the server to send past 64 KiB.
        try link.pump()
        let received = link.clientEvents.data(stream: id).readableBytes
        link.client.consume(streamID: id, bytes: received)
        try link.pump()
        link.client.consume(streamID: id, bytes: link.clientEvents.data(stream: id).readableBytes - received)
        try link.pump()

        let resp = link.clientEvents.headers(stream: id)
        #expect(resp.count == 2)
        #expect(resp[0].1 == .response)
        #expect(resp[1].1 == .trailers)
        #expect(resp[1].2 == true)
        #expect(resp[1].0.pairs.map(\.name) == ["grpc-status", "x-trace-bin"])
        #expect(link.clientEvents.data(stream: id) == BackToBack.bytes(70000, seed: 7))
        #expect(link.clientEvents.closed(stream: id) == 0)
        #expect(link.serverEvents.sent(stream: id) == 70000)
    }

    /// "Sent" is when nghttp2 serialises the request HEADERS, not the submit: nothing is
    /// reported until `produceOutput`, a request held back by the peer's
    /// MAX_CONCURRENT_STREAMS is reported only once it goes out, and trailers are no request.
    @Test func requestHeadersAreReportedSentWhenSerialised() throws {
        var serverSettings = H2Session.Settings()
        serverSettings.maxConcurrentStreams = 1
        let link = BackToBack(serverSettings: serverSettings)
        try link.pump()
        let first = try link.client.submitRequest(BackToBack.request(), endStream: false)
        let second = try link.client.submitRequest(BackToBack.request(), endStream: true)
        link.client.withEvents { link.clientEvents.append($0) }
        #expect(link.clientEvents.headersSent == [])
        try link.pump()
        #expect(link.clientEvents.headersSent == [first])
        var trailers = HeaderBlock()
        trailers.append(name: "x-end", value: "1")
        link.client.endStream(streamID: first, trailers: trailers)
        try link.pump()
        #expect(link.clientEvents.headersSent == [first])
        try link.server.submitResponse(streamID: first, Peer.grpcTrailers(status: 0), endStream: true)
        try link.pump()
        // The first stream closed: its slot lets the second request's HEADERS out.
        #expect(link.clientEvents.headersSent == [first, second])
        #expect(link.serverEvents.headersSent == [])
    }

    /// DATA payloads up to ``H2Session/copiedPayloadLimit`` travel in the same write as the
    /// frames around them; larger ones are separate writes of the very bytes that were queued
    /// (no copy). Either way the peer reads the same bytes.
    @Test(arguments: [1, 100, H2Session.copiedPayloadLimit, H2Session.copiedPayloadLimit + 1, 20_000])
    func smallPayloadsShareTheWriteLargeOnesAreSlices(size: Int) throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(), endStream: false)
        try link.pump()
        try link.server.submitResponse(streamID: id, Peer.grpcResponse(), endStream: false)
        let payload = BackToBack.bytes(size, seed: 3)
        link.server.sendData(streamID: id, payload)
        link.server.endStream(streamID: id, trailers: Peer.grpcTrailers(status: 0))
        var writes: [ByteBuffer] = []
        _ = try link.server.produceOutput { writes.append($0) }
        if size > H2Session.copiedPayloadLimit {
            // Header run, the payload slice(s) (a frame is at most 16 KiB), the trailers' run.
            #expect(writes.count >= 3, "\(writes.count) writes")
            #expect(writes.contains { $0.readableBytes == min(size, 16384) })
        } else {
            #expect(writes.count == 1, "\(writes.count) writes for \(size) payload bytes")
        }
        for w in writes { try link.client.receive(w) }
        link.client.withEvents { link.clientEvents.append($0) }
        #expect(link.clientEvents.data(stream: id) == payload)
        #expect(link.clientEvents.headers(stream: id).last?.1 == .trailers)
    }

    @Test func trailersOnlyResponse() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(), endStream: true)
        try link.pump()
        var block = HeaderBlock()
        block.append(name: ":status", value: "200")
        block.append(name: "content-type", value: "application/grpc")
        block.append(name: "grpc-status", value: "12")
        try link.server.submitResponse(streamID: id, block, endStream: true)
        try link.pump()
        let resp = link.clientEvents.headers(stream: id)
        #expect(resp.count == 1)
        #expect(resp[0].2 == true)
        #expect(resp[0].0.first("grpc-status") == "12")
        #expect(link.clientEvents.closed(stream: id) == 0)
    }

    @Test func resetStreamReachesPeerWithCode() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(), endStream: false)
        try link.pump()
        link.client.resetStream(streamID: id, errorCode: H2ErrorCode.cancel)
        try link.pump()
        #expect(link.serverEvents.closed(stream: id) == H2ErrorCode.cancel)
        #expect(link.clientEvents.closed(stream: id) == H2ErrorCode.cancel)
    }

    @Test func goAwayIsReported() throws {
        let link = BackToBack()
        let id = try link.client.submitRequest(BackToBack.request(), endStream: true)
        try link.pump()
        link.server.submitGoAway(errorCode: H2ErrorCode.noError)
        try link.pump()
        let goaway = link.clientEvents.compactMap { event -> (Int32, UInt32)? in
            if case .goAway(let last, let code) = event { return (last, code) }
            return nil
        }
        #expect(goaway.count == 1)
        #expect(goaway.first?.0 == id)
        #expect(link.client.acceptsNewStreams == false)
    }

    @Test func flowControlStallsUntilConsumed() throws {
        var small = H2Session.Settings()
        small.initialWindowSize = 65535
        small.connectionWindowSize = 65535
        let link = BackToBack(clientSettings: small, serverSettings: small)
        let id = try link.client.submitRequest(BackToBack.request(grpc: false), endStream: false)
        link.client.sendData(streamID: id, BackToBack.bytes(200_000))
        link.client.endStream(streamID: id, trailers: nil)
        try link.pump()
        // Nothing consumed: the server has seen exactly one window's worth.
        #expect(link.serverEvents.data(stream: id).readableBytes == 65535)
        #expect(link.client.queuedBytes(streamID: id) == 200_000 - 65535)
        #expect(!link.serverEvents.endedStream(id))
        // Consuming re-opens the window; the rest flows.
        var total = 65535
        for _ in 0..<10 where total < 200_000 {
            link.server.consume(
                streamID: id, bytes: link.serverEvents.data(stream: id).readableBytes - (total - 65535) - 0)
            try link.pump()
            total = link.serverEvents.data(stream: id).readableBytes
        }
        #expect(link.serverEvents.data(stream: id) == BackToBack.bytes(200_000))
        #expect(link.serverEvents.endedStream(id))
    }

    @Test func stalledLinkResumes() throws {
        let link = BackToBack()
        link.deliverToServer = false
        let id = try link.client.submitRequest(BackToBack.request(), endStream: false)
        link.client.sendData(streamID: id, BackToBack.bytes(10))
        try link.pump()
        #expect(link.serverEvents.isEmpty)
        link.deliverToServer = true
        link.client.sendData(streamID: id, BackToBack.bytes(10, seed: 9))
        link.client.endStream(streamID: id, trailers: nil)
        try link.pump()
        var expected = BackToBack.bytes(10)
        var tail = BackToBack.bytes(10, seed: 9)
        expected.writeBuffer(&tail)
        #expect(link.serverEvents.data(stream: id) == expected)
    }

    @Test func headerListOverLimitResetsStream() throws {
        var limited = H2Session.Settings()
        limited.maxHeaderListSize = 2048
        let link = BackToBack(serverSettings: limited)
        var h = BackToBack.request()
        h.append(name: "x-big", value: String(repeating: "a", count: 4000))
        let id = try link.client.submitRequest(h, endStream: true)
        try link.pump()
        #expect(
            link.serverEvents.contains {
                if case .headerListTooLarge(let s) = $0 { return s == id }
                return false
            })
        #expect(link.serverEvents.headers(stream: id).isEmpty)
        #expect(link.clientEvents.closed(stream: id) != nil)
        #expect(link.clientEvents.closed(stream: id) != 0)
    }

    /// The list size is summed as fields arrive: a block of exactly the limit passes, one byte
    /// more does not, and each block (the next one after a refused one too) counts from zero.
    /// A block of many small fields passes whole (summing the block again per field made such
    /// a block cost time quadratic in its fields).
    @Test func headerListLimitIsExactAndCountsEachBlockFromZero() throws {
        var limited = H2Session.Settings()
        limited.maxHeaderListSize = 4096
        let link = BackToBack(serverSettings: limited)
        func request(listSize: Int) -> HeaderBlock {
            var h = BackToBack.request()
            let pad = listSize - h.listSize - 32 - "x-pad".utf8.count
            h.append(name: "x-pad", value: String(repeating: "p", count: pad))
            #expect(h.listSize == listSize)
            return h
        }
        let atLimit = try link.client.submitRequest(request(listSize: 4096), endStream: true)
        let over = try link.client.submitRequest(request(listSize: 4097), endStream: true)
        let afterRefused = try link.client.submitRequest(request(listSize: 4096), endStream: true)
        var many = BackToBack.request()
        while many.listSize + 34 <= 4096 { many.append(name: "a", value: "b") }
        let manyFields = try link.client.submitRequest(many, endStream: true)
        try link.pump()
        func tooLarge(_ id: Int32) -> Bool {
            link.serverEvents.contains { if case .headerListTooLarge(id) = $0 { true } else { false } }
        }
        #expect(!tooLarge(atLimit) && link.serverEvents.headers(stream: atLimit).count == 1)
        #expect(tooLarge(over) && link.serverEvents.headers(stream: over).isEmpty)
        #expect(!tooLarge(afterRefused) && link.serverEvents.headers(stream: afterRefused).count == 1)
        #expect(!tooLarge(manyFields))
        #expect(link.serverEvents.headers(stream: manyFields).first?.0.count == many.count)
    }

    @Test func garbagePrefaceIsConnectionError() throws {
        let server = H2Session(role: .server)
        var junk = ByteBufferAllocator().buffer(capacity: 64)
        junk.writeString("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(throws: H2Error.self) { try server.receive(junk) }
    }

    @Test func serverAdvertisesMaxConcurrentStreams() throws {
        var s = H2Session.Settings()
        s.maxConcurrentStreams = 7
        let link = BackToBack(serverSettings: s)
        _ = try link.client.submitRequest(BackToBack.request(), endStream: true)
        try link.pump()
        #expect(link.client.remoteMaxConcurrentStreams == 7)
    }

    /// Request HEADERS submitted but not yet written when the peer's GOAWAY is processed:
    /// libnghttp2 (1.52) refuses to send them on the next write and closes each with
    /// REFUSED_STREAM (the proxy's replay path), never reporting them sent; the body queued on
    /// one is dropped with it.
    @Test func requestsUnsentWhenAGoAwayArrivesCloseAsRefused() throws {
        let b = BackToBack()
        let first = try b.client.submitRequest(BackToBack.request(), endStream: true)
        try b.pump()
        let unsent = try b.client.submitRequest(BackToBack.request(), endStream: true)
        let withBody = try b.client.submitRequest(BackToBack.request(), endStream: false)
        b.client.sendData(streamID: withBody, BackToBack.bytes(100))
        b.client.endStream(streamID: withBody, trailers: nil)
        _ = nghttp2_submit_goaway(b.server.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), first, 0, nil, 0)
        var toClient: [ByteBuffer] = []
        try b.server.produceOutput { toClient.append($0) }
        for buffer in toClient { try b.client.receive(buffer) }
        var events: [H2Event] = []
        b.client.withEvents { events.append($0) }
        #expect(events.contains { if case .goAway(first, 0) = $0 { true } else { false } })
        #expect(!b.client.acceptsNewStreams)
        #expect(events.closed(stream: unsent) == nil, "nothing happens to them until the next write")
        try b.client.produceOutput { _ in }
        b.client.withEvents { events.append($0) }
        #expect(events.closed(stream: unsent) == H2ErrorCode.refusedStream)
        #expect(events.closed(stream: withBody) == H2ErrorCode.refusedStream)
        #expect(!events.headersSent.contains(unsent) && !events.headersSent.contains(withBody))
        #expect(b.client.queuedDataBytes == 0)
        #expect(b.client.isAlive, "stream \(first) is still open")
    }
}
