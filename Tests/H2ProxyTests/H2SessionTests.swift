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
}

@Suite struct ConnectionLimitsTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func configuration() -> ProxyConfiguration {
        var c = ProxyConfiguration(listenHost: "127.0.0.1", listenPort: 0, upstreamHost: "127.0.0.1", upstreamPort: 1)
        c.prefaceTimeout = .seconds(2)
        c.idleTimeout = .seconds(10)
        c.maxConnectionAge = .seconds(60)
        return c
    }

    @Test func prefaceTimeoutClosesSilentConnections() {
        var l = DownstreamConnection.Limits(now: self.t0)
        #expect(l.check(now: self.t0 + .seconds(1), openStreams: 0, configuration: self.configuration()) == .none)
        #expect(
            l.check(now: self.t0 + .seconds(2), openStreams: 0, configuration: self.configuration())
                == .closePrefaceTimeout)
    }

    @Test func idleTimeoutCountsFromTheLastStream() {
        var l = DownstreamConnection.Limits(now: self.t0)
        l.prefaceDone = true
        #expect(l.check(now: self.t0 + .seconds(8), openStreams: 3, configuration: self.configuration()) == .none)
        #expect(l.check(now: self.t0 + .seconds(17), openStreams: 0, configuration: self.configuration()) == .none)
        #expect(
            l.check(now: self.t0 + .seconds(18), openStreams: 0, configuration: self.configuration()) == .goAwayIdle)
        // Once GOAWAY started, nothing more.
        #expect(l.check(now: self.t0 + .seconds(70), openStreams: 0, configuration: self.configuration()) == .none)
    }

    @Test func maxAgeSendsGoAwayEvenWhenBusy() {
        var l = DownstreamConnection.Limits(now: self.t0)
        l.prefaceDone = true
        #expect(
            l.check(now: self.t0 + .seconds(60), openStreams: 5, configuration: self.configuration()) == .goAwayMaxAge)
    }
}

@Suite struct FatalInputTests {
    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags]
            + [UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)]
            + payload
    }

    /// CVE-2024-28182: a CONTINUATION flood ends the connection with GOAWAY(ENHANCE_YOUR_CALM).
    @Test func continuationFloodEndsTheConnection() throws {
        var settings = H2Session.Settings()
        settings.maxContinuations = 8
        let server = H2Session(role: .server, settings: settings)
        var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        bytes += Self.frame(type: 4, flags: 0, stream: 0, payload: [])
        bytes += Self.frame(type: 1, flags: 0, stream: 1, payload: [0x82])
        for _ in 0..<20 { bytes += Self.frame(type: 9, flags: 0, stream: 1, payload: [0x84]) }
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        #expect(throws: H2Error.self) { try server.receive(buffer) }
        var out: [UInt8] = []
        let alive = try server.produceOutput { out += Array($0.readableBytesView) }
        #expect(!alive)
        // Find the GOAWAY frame (type 7) and read its error code.
        var i = 0
        var goAwayCode: UInt32?
        while i + 9 <= out.count {
            let length = Int(out[i]) << 16 | Int(out[i + 1]) << 8 | Int(out[i + 2])
            if out[i + 3] == 7 && i + 9 + 8 <= out.count {
                let p = i + 9 + 4
                goAwayCode =
                    UInt32(out[p]) << 24 | UInt32(out[p + 1]) << 16 | UInt32(out[p + 2]) << 8 | UInt32(out[p + 3])
            }
            i += 9 + length
        }
        #expect(goAwayCode == H2ErrorCode.enhanceYourCalm)
    }
}
