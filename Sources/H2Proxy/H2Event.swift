import NIOCore

/// What a ``H2Session`` observed while it read or wrote bytes.
///
/// Events are queued by nghttp2's callbacks and handed to the owner only after
/// `nghttp2_session_mem_recv`/`nghttp2_session_send` has returned, so reacting to an
/// event never re-enters the library.
public enum H2Event: Sendable {
    /// A complete header block. `kind` is derived from its pseudo-headers.
    case headers(streamID: Int32, HeaderBlock, kind: HeadersKind, endStream: Bool)
    /// A chunk of DATA payload, sliced from the bytes given to `receive` (no copy).
    case data(streamID: Int32, ByteBuffer)
    /// END_STREAM arrived on a DATA frame.
    case endStream(streamID: Int32)
    /// `bytes` of this stream's queued DATA were written to the connection.
    case dataSent(streamID: Int32, bytes: Int)
    /// The stream is closed; `errorCode` is `0` (NO_ERROR) for a clean close.
    case streamClosed(streamID: Int32, errorCode: UInt32)
    /// The peer sent GOAWAY.
    case goAway(lastStreamID: Int32, errorCode: UInt32)
    /// The peer's SETTINGS arrived (read them from the session).
    case remoteSettings
    /// A header list went over the configured limit; the stream was reset.
    case headerListTooLarge(streamID: Int32)
    /// The peer broke the protocol on a stream or the connection (counted, already answered).
    case protocolError(streamID: Int32, code: Int32)
}

public enum HeadersKind: Sendable, Equatable {
    case request
    case response
    /// A 1xx interim response.
    case informational
    case trailers
}

/// HTTP/2 error codes (RFC 9113 §7).
public enum H2ErrorCode {
    public static let noError: UInt32 = 0x0
    public static let protocolError: UInt32 = 0x1
    public static let internalError: UInt32 = 0x2
    public static let flowControlError: UInt32 = 0x3
    public static let streamClosed: UInt32 = 0x5
    public static let refusedStream: UInt32 = 0x7
    public static let cancel: UInt32 = 0x8
    public static let enhanceYourCalm: UInt32 = 0xb
}

/// A failure reported by nghttp2, with the call that produced it.
public struct H2Error: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var operation: String
    public var description: String { "\(self.operation): \(H2Session.errorString(self.code)) (\(self.code))" }
}
