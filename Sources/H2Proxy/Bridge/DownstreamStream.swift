import NIOCore

/// The client side of a stream on a ``DownstreamConnection``: a stream proxied upstream, or
/// one this sidecar answers itself.
protocol DownstreamStream: AnyObject {
    func requestData(_ chunk: ByteBuffer)
    func requestEnd(trailers: HeaderBlock?)
    func responseDataWritten(_ bytes: Int)
    func downstreamDidClose(errorCode: UInt32, connectionLost: Bool)
}
