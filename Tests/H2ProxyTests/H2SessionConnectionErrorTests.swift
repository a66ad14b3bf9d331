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

    @Test func aCleanGoAwayFromThePeerIsNotAnError() throws {
        let link = BackToBack()
        try link.pump()
        link.server.submitGoAway(errorCode: H2ErrorCode.noError)
        try link.pump()
        #expect(!link.clientEvents.contains { if case .connectionError = $0 { true } else { false } })
        #expect(link.client.protocolErrors == 0)
    }
}
