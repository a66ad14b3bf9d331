import NIOCore
import Testing

@testable import H2Proxy

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
