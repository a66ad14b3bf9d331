import Logging
import NIOCore

/// On an h2c listener, recognises a TLS ClientHello in the first bytes: answers with a
/// `handshake_failure` alert, counts and logs it, and closes. Anything else passes through and
/// the handler removes itself.
final class TLSOnPlaintextPort: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A TLS 1.2 record: alert, fatal, handshake_failure.
    private static let alert: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]
    private let metrics: TLSMetrics
    private let logger: Logger

    init(metrics: TLSMetrics, logger: Logger) {
        self.metrics = metrics
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        // 0x16: TLS handshake record; an HTTP/2 preface starts with "PRI".
        guard buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == 0x16 else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        self.metrics.handshakeFailed(side: .downstream, reason: .tlsOnPlaintextPort)
        self.logger.notice(
            "TLS handshake on the h2c listener refused (this listener has no tls: configured)",
            metadata: [
                "side": "downstream", "peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
                "reason": "\(TLSHandshakeFailure.Reason.tlsOnPlaintextPort.rawValue)",
            ])
        let alert = context.channel.allocator.buffer(bytes: Self.alert)
        context.writeAndFlush(self.wrapOutboundOut(alert)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
