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
    /// The request HEADERS of this stream (client role) were serialised into the connection's
    /// output: queued by the ``H2Session/produceOutput(_:)`` call that writes them, which
    /// may come well after the submit (nghttp2 sends frames in its own order, and a stream can
    /// wait for the peer's MAX_CONCURRENT_STREAMS).
    case requestHeadersSent(streamID: Int32)
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
    /// The peer broke the protocol in a way nghttp2 answers with GOAWAY and no invalid-frame
    /// report (e.g. DATA on a stream never opened); nghttp2's description of it.
    case connectionError(String)
}

extension H2Event {
    /// Moves the header block out of a ``headers(streamID:_:kind:endStream:)`` event (which
    /// becomes ``endStream(streamID:)`` with no block: do not read it again as an event), so
    /// that its receiver holds the only reference and edits it in place. Reading the block out
    /// of a pattern instead leaves a second reference in the event, and the first edit copies
    /// the block's bytes and field table (3 allocations per block). `nil` for other events.
    public mutating func takeHeaderBlock() -> HeaderBlock? {
        guard case .headers(let streamID, let block, _, _) = self else { return nil }
        self = .endStream(streamID: streamID)
        return block
    }
}
