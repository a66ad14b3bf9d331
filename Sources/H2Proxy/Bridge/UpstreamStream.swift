import NIOCore

/// A stream that rides on an ``UpstreamConnection``: a proxied client stream, or a call this
/// sidecar makes itself (a probe).
protocol UpstreamStream: AnyObject {
    /// The pool picked `connection`: open the stream on it.
    func attach(to connection: UpstreamConnection)
    /// The pool could not get a connection (connect error, closed before SETTINGS).
    func failUnavailable(_ cause: String)
    /// The pool found no slot on an upstream connection within the wait deadline.
    func upstreamWaitTimedOut(_ cause: String)
    /// A header block arrived on the stream; the stream owns `headers` alone (edits are in place)
    /// and may give it back to the session with ``H2Session/recycle(_:)`` once it is done.
    func responseHeaders(_ headers: consuming HeaderBlock, kind: HeadersKind, endStream: Bool)
    func responseData(_ chunk: ByteBuffer)
    /// END_STREAM on a DATA frame: the response ended without trailers.
    func responseDataEnded()
    /// The upstream session serialised this stream's request HEADERS (``H2Event/requestHeadersSent(streamID:)``)
    /// in the write that began at `sentAt` (read before the bytes reached the socket).
    func requestHeadersWritten(at sentAt: NIODeadline)
    func requestDataWritten(_ bytes: Int)
    func upstreamDidClose(errorCode: UInt32)
    /// The connection went away before the stream's close arrived; `loss` says whether the
    /// upstream may have processed the stream.
    func upstreamConnectionLost(_ cause: String, _ loss: UpstreamLoss)
}

/// What a lost upstream connection says about one of its streams: whether the upstream may
/// have processed it, so whether it may be replayed on another connection (RFC 9113 §8.7).
enum UpstreamLoss: Equatable, Sendable {
    /// The connection closed or failed. The upstream may have processed the stream if its
    /// request HEADERS were written; if they never were, it cannot have.
    case connectionLost
    /// The stream's ID is above the last stream ID of a GOAWAY the upstream sent: it says it did
    /// not process the stream (RFC 9113 §6.8).
    case aboveGoAway
    /// The proxy gave the connection up (shutdown): the stream ends here, unprocessed or not.
    case abandoned

    /// Whether the upstream provably did not process a stream lost this way.
    func provesUnprocessed(requestHeadersSent: Bool) -> Bool {
        switch self {
        case .connectionLost: !requestHeadersSent
        case .aboveGoAway: true
        case .abandoned: false
        }
    }
}

extension UpstreamStream {
    /// The stream waited longer than ``ProxyConfiguration/upstreamWaitTimeout`` for a slot on
    /// an upstream connection. Streams answer it like an unreachable upstream unless they say
    /// otherwise.
    func upstreamWaitTimedOut(_ cause: String) { self.failUnavailable(cause) }
}
