import Logging
import NIOConcurrencyHelpers
import NIOCore

/// TLS on one side of the proxy: the current context (replaced on reload), the handshake
/// timeout and the metrics. Set it on ``ProxyConfiguration`` to turn TLS on for that side.
public final class TLSEndpoint: Sendable {
    public enum Side: String, Sendable, CaseIterable {
        /// Towards clients: the proxy is the TLS server.
        case downstream
        /// Towards the upstream hop: the proxy is the TLS client.
        case upstream
    }

    public let side: Side
    public let handshakeTimeout: TimeAmount
    let metrics: TLSMetrics
    private let current: NIOLockedValueBox<TLSContext>

    public init(side: Side, context: TLSContext, metrics: TLSMetrics, handshakeTimeout: TimeAmount = .seconds(10)) {
        precondition((side == .downstream) == (context.role == .server), "downstream TLS needs a server context")
        self.side = side
        self.current = NIOLockedValueBox(context)
        self.metrics = metrics
        self.handshakeTimeout = handshakeTimeout
    }

    /// The context new connections use.
    public var context: TLSContext { self.current.withLockedValue { $0 } }

    /// Makes new connections use `context`; open connections keep the one they started with.
    public func replace(with context: TLSContext) {
        precondition(context.role == self.context.role)
        self.current.withLockedValue { $0 = context }
    }

    func makeHandler(logger: Logger) -> TLSHandler {
        TLSHandler(endpoint: self, context: self.context, logger: logger)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// The hook ``ProxyServer`` and ``UpstreamPool`` call before adding their HTTP/2 handler:
    /// a ``TLSHandler`` when TLS is on, else (with metrics, on the listener) a
    /// ``TLSOnPlaintextPort`` that refuses TLS handshakes.
    func addTLSHandler(_ endpoint: TLSEndpoint?, metrics: TLSMetrics? = nil, logger: Logger) throws {
        if let endpoint {
            try self.addHandler(endpoint.makeHandler(logger: logger))
        } else if let metrics {
            try self.addHandler(TLSOnPlaintextPort(metrics: metrics, logger: logger))
        }
    }
}
