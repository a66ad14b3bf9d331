import NIOCore

/// Answers some requests on the sidecar itself instead of forwarding them (receiver mode for
/// echo probes). Called on the connection's event loop.
public protocol LocalResponder: Sendable {
    /// Whether this sidecar answers `request` itself.
    func handles(_ request: HeaderBlock) -> Bool
    /// The answer to a complete request, received at `receivedAt` (``StreamClock/requestReceived()``);
    /// any other time it needs comes from `clock`, the loop's.
    func respond(to request: HeaderBlock, body: ByteBuffer, receivedAt: NIODeadline, clock: StreamClock)
        -> LocalResponse
}
