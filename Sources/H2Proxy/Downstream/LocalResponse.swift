import NIOCore

public struct LocalResponse: Sendable {
    public var headers: HeaderBlock
    public var body: ByteBuffer
    /// Sent as trailers; `nil` ends the stream on the last DATA frame.
    public var trailers: HeaderBlock?
    /// Wait this long before answering (a service's latency, in the demo).
    public var delay: TimeAmount

    public init(headers: HeaderBlock, body: ByteBuffer, trailers: HeaderBlock?, delay: TimeAmount = .zero) {
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.delay = delay
    }
}
