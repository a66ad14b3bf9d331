import NIOCore
import Testing

@testable import H2Proxy

/// Connection errors nghttp2 answers on its own (GOAWAY, no invalid-frame report) still reach
/// the owner, once, with nghttp2's description.
@Suite struct H2SessionConnectionErrorTests {
    @Test func dataOnAStreamNeverOpenedIsReportedOnce() throws {
        let server = H2Session(role: .server)
        var bytes = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        // SETTINGS (empty), then DATA on stream 1, which was never opened.
        bytes.writeBytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0])
        bytes.writeBytes([0, 0, 3, 0x0, 0, 0, 0, 0, 1, 0x61, 0x62, 0x63])
        try server.receive(bytes)
        // A GOAWAY goes out and the session wants to read no more.
        var out = ByteBuffer()
        try server.produceOutput {
            var b = $0
            out.writeBuffer(&b)
        }
        #expect(!server.isAlive)
        #expect(out.readableBytes > 0)
        var errors: [String] = []
        server.withEvents {
            if case .connectionError(let message) = $0 { errors.append(message) }
        }
        #expect(errors.count == 1)
        #expect(server.protocolErrors == 1)
        try server.produceOutput { _ in }
        server.withEvents { if case .connectionError = $0 { errors.append("again") } }
        #expect(errors.count == 1)
    }

    /// RFC 9113 §5.1: DATA or HEADERS on a stream the peer already ended is a connection error
    /// STREAM_CLOSED. (With `nghttp2_option_set_no_closed_streams` nghttp2 ignores them: a
    /// client could then have the sidecar decode HEADERS on a closed stream without end.)
    @Test(arguments: [UInt8(0x0), UInt8(0x1)])
    func framesOnAClosedStreamAreAStreamClosedConnectionError(frameType: UInt8) throws {
        let server = H2Session(role: .server)
        var bytes = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        bytes.writeBytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0])
        // HEADERS on stream 1 with END_STREAM | END_HEADERS: GET / (static table 2, 6, 4, and
        // :authority literal "a" with index 1).
        let request: [UInt8] = [0x82, 0x86, 0x84, 0x41, 0x01, 0x61]
        bytes.writeBytes([0, 0, UInt8(request.count), 0x1, 0x5, 0, 0, 0, 1] + request)
        try server.receive(bytes)
        var opened: [Int32] = []
        server.withEvents { if case .headers(let id, _, _, _) = $0 { opened.append(id) } }
        #expect(opened == [1])
        try server.submitResponse(streamID: 1, HeaderBlock([(":status", "200")]), endStream: true)
        try server.produceOutput { _ in }
        server.withEvents { _ in }
        // Stream 1 is closed both ways; now DATA or HEADERS (END_STREAM, END_HEADERS) on it.
        var late = ByteBuffer()
        if frameType == 0x0 {
            late.writeBytes([0, 0, 1, 0x0, 0x1, 0, 0, 0, 1, 0x61])
        } else {
            late.writeBytes([0, 0, UInt8(request.count), 0x1, 0x5, 0, 0, 0, 1] + request)
        }
        try server.receive(late)
        var out = ByteBuffer()
        try server.produceOutput {
            var b = $0
            out.writeBuffer(&b)
        }
        // The last frame out is GOAWAY (type 7) with error code STREAM_CLOSED (5).
        var goAwayCode: UInt32?
        while out.readableBytes >= 9 {
            let length = Int(out.getInteger(at: out.readerIndex, as: UInt32.self)! >> 8)
            let type = out.getInteger(at: out.readerIndex + 3, as: UInt8.self)!
            if type == 0x7 { goAwayCode = out.getInteger(at: out.readerIndex + 9 + 4, as: UInt32.self) }
            out.moveReaderIndex(forwardBy: 9 + length)
        }
        #expect(goAwayCode == H2ErrorCode.streamClosed)
        #expect(!server.isAlive)
    }

    @Test func aCleanGoAwayFromThePeerIsNotAnError() throws {
        let link = BackToBack()
        try link.pump()
        link.server.submitGoAway(errorCode: H2ErrorCode.noError)
        try link.pump()
        #expect(!link.clientEvents.contains { if case .connectionError = $0 { true } else { false } })
        #expect(link.client.protocolErrors == 0)
    }
}
