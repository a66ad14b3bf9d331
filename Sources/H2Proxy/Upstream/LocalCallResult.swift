import NIOCore

/// What came back from a ``LocalCall``.
public struct LocalCallResult: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The response ended (any status; read it from the headers or trailers).
        case completed
        /// No connection to the address could be made, or none had a free stream slot within
        /// ``ProxyConfiguration/upstreamWaitTimeout``.
        case connectFailed(String)
        /// The stream was reset (HTTP/2 error code).
        case reset(UInt32)
        /// The connection went away mid-call.
        case connectionLost(String)
        /// No response end before the timeout; the stream was cancelled.
        case timedOut
    }

    public var outcome: Outcome
    /// Response headers (for a Trailers-Only response, the single block).
    public var headers: HeaderBlock?
    public var body: ByteBuffer
    /// Trailers as the observer left them (with this sidecar's `insight-timing` entry).
    public var trailers: HeaderBlock?
    /// When the call started and ended (``StreamClock/requestReceived()``, ``StreamClock/streamEnded()``).
    public var startedAt: NIODeadline
    public var endedAt: NIODeadline
    /// What the stream's observer measured (``StreamObserver/measurements``), so that it need not be
    /// parsed again from the trailers; `nil` without an observer.
    public var measurements: StreamMeasurements?

    /// `grpc-status` from the trailers (or the Trailers-Only headers).
    public var grpcStatus: Int? {
        self.trailers?.integer("grpc-status") ?? self.headers?.integer("grpc-status")
    }
}
