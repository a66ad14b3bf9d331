import NIOCore

/// Finds gRPC message boundaries in a DATA byte stream: each message is a 1-byte
/// compressed flag and a 4-byte big-endian length, then the payload.
///
/// It only counts; bytes are never copied or held.
public struct GRPCMessageFramer: Sendable {
    private var headerBytesSeen = 0
    private var pendingLength: UInt32 = 0
    private var payloadRemaining = 0

    public init() {}

    /// Feeds a chunk; returns how many messages ended inside it.
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
                // Reading the 5-byte prefix.
                let byte = raw[i]
                i += 1
                if self.headerBytesSeen > 0 {
                    self.pendingLength = (self.pendingLength << 8) | UInt32(byte)
                }
                self.headerBytesSeen += 1
                if self.headerBytesSeen == 5 {
                    self.headerBytesSeen = 0
                    self.payloadRemaining = Int(self.pendingLength)
                    self.pendingLength = 0
                    if self.payloadRemaining == 0 { completed += 1 }
                }
            }
        }
        return completed
    }

    /// Whether the stream stopped in the middle of a message.
    public var isMidMessage: Bool { self.headerBytesSeen > 0 || self.payloadRemaining > 0 }
}
