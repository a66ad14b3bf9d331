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
    func upstreamConnectionLost(_ cause: String)
}

extension UpstreamStream {
    /// The stream waited longer than ``ProxyConfiguration/upstreamWaitTimeout`` for a slot on
    /// an upstream connection. Streams answer it like an unreachable upstream unless they say
    /// otherwise.
    func upstreamWaitTimedOut(_ cause: String) { self.failUnavailable(cause) }
}
