import NIOCore

/// What came back from a ``LocalCall``.
///
/// A class, not a struct: the result goes through the completion and the caller's
/// classification, and every copy of a struct retained and released each of its
/// header blocks, body and segments (about 45 reference-count operations per probe).
public final class LocalCallResult: Sendable {
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

    public let outcome: Outcome
    /// Response headers (for a Trailers-Only response, the single block).
    public let headers: HeaderBlock?
    /// The response's DATA, up to ``maxBodyBytes``.
    public let body: ByteBuffer
    /// Whether the response had more DATA than ``maxBodyBytes`` (``body`` holds the first bytes only).
    public let bodyTruncated: Bool
    /// The most response DATA a call keeps, in bytes (1 MiB).
    public static let maxBodyBytes = 1 << 20
    /// Trailers as the observer left them (with this sidecar's `insight-timing` entry).
    public let trailers: HeaderBlock?
    /// When the call started and ended (``StreamClock/requestReceived()``, ``StreamClock/streamEnded()``).
    public let startedAt: NIODeadline
    public let endedAt: NIODeadline
    /// What the stream's observer measured (``StreamObserver/measurements``), so that it need not be
    /// parsed again from the trailers; `nil` without an observer.
    public let measurements: StreamMeasurements?

    public init(
        outcome: Outcome, headers: HeaderBlock?, body: ByteBuffer, trailers: HeaderBlock?, startedAt: NIODeadline,
        endedAt: NIODeadline, measurements: StreamMeasurements?, bodyTruncated: Bool = false
    ) {
        self.outcome = outcome
        self.headers = headers
        self.body = body
        self.bodyTruncated = bodyTruncated
        self.trailers = trailers
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.measurements = measurements
    }

    /// `grpc-status` from the trailers (or the Trailers-Only headers).
    public var grpcStatus: Int? {
        self.trailers?.integer("grpc-status") ?? self.headers?.integer("grpc-status")
    }
}
