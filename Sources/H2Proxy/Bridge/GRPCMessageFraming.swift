import NIOCore

/// gRPC's length-prefixed message framing ("Length-Prefixed-Message" in gRPC over HTTP/2): each
/// message is a 1-byte compressed flag and a 4-byte big-endian length, then that many bytes.
///
/// A value follows the message boundaries of one direction of a stream across its DATA chunks
/// and counts the messages that end; the bridge feeds it every DATA frame of a gRPC stream. It
/// reads each chunk in place and keeps three integers, so it never copies, holds or allocates.
/// The static functions frame one message and read the first message of a whole body; the
/// probes, the echo responder and the demo use them.
public struct GRPCMessageFraming: Sendable {
    /// Bytes before each message: the compressed flag (1) and the length (4).
    public static let prefixLength = 5

    /// A body that does not start with one whole, uncompressed message.
    public struct DecodeError: Error, Equatable, Sendable {
        public var reason: String
    }

    /// Prefix bytes of the current message read so far, `0..<prefixLength`.
    private var prefixBytesSeen = 0
    /// The length field, big-endian, as far as it has been read.
    private var pendingLength: UInt32 = 0
    /// Payload bytes of the current message still to come.
    private var payloadRemaining = 0

    public init() {}

    /// Feeds the next chunk of one direction's DATA; returns how many messages ended inside it.
    public mutating func consume(_ chunk: ByteBuffer) -> Int {
        var completed = 0
        chunk.withUnsafeReadableBytes { raw in
            var i = 0
            let n = raw.count
            while i < n {
                if self.payloadRemaining > 0 {
                    let take = min(self.payloadRemaining, n - i)
                    self.payloadRemaining -= take
                    i += take
                    if self.payloadRemaining == 0 { completed += 1 }
                    continue
                }
                // Reading the prefix: the flag (byte 0, not needed to count), then the length.
                let byte = raw[i]
                i += 1
                if self.prefixBytesSeen > 0 {
                    self.pendingLength = (self.pendingLength << 8) | UInt32(byte)
                }
                self.prefixBytesSeen += 1
                if self.prefixBytesSeen == Self.prefixLength {
                    self.prefixBytesSeen = 0
                    self.payloadRemaining = Int(self.pendingLength)
                    self.pendingLength = 0
                    if self.payloadRemaining == 0 { completed += 1 }
                }
            }
        }
        return completed
    }

    /// Whether the bytes fed so far stop in the middle of a message.
    public var isMidMessage: Bool { self.prefixBytesSeen > 0 || self.payloadRemaining > 0 }

    /// One uncompressed message with its prefix, ready to send as a gRPC body.
    public static func frame(_ message: ByteBuffer) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: message.readableBytes + Self.prefixLength)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(message.readableBytes))
        var m = message
        out.writeBuffer(&m)
        return out
    }

    /// The first message of a gRPC body (a slice of it, not a copy); only uncompressed messages.
    public static func firstMessage(in body: ByteBuffer) throws -> ByteBuffer {
        var b = body
        guard let flag = b.readInteger(as: UInt8.self), let length = b.readInteger(as: UInt32.self) else {
            throw DecodeError(reason: "no gRPC message in the response")
        }
        guard flag == 0 else { throw DecodeError(reason: "compressed gRPC message") }
        guard let message = b.readSlice(length: Int(length)) else {
            throw DecodeError(reason: "truncated gRPC message")
        }
        return message
    }
}
