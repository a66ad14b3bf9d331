import Logging
import NIOCore
import NIOPosix

/// The h2c connections of one event loop to the upstream hop.
///
/// A stream goes to the first ready connection with room under the peer's
/// MAX_CONCURRENT_STREAMS; when none has room (or after a GOAWAY) a new connection is opened,
/// up to the configured maximum, and streams wait for it.
final class UpstreamPool {
    unowned let loop: ProxyLoop
    let host: String
    let port: Int
    private var connections: [UpstreamConnection] = []
    private var connecting = 0
    private var waiting = CircularBuffer<UpstreamStream>()
    private var lastConnectError: String?

    init(loop: ProxyLoop, host: String, port: Int) {
        self.loop = loop
        self.host = host
        self.port = port
    }

    var openConnections: Int { self.connections.count }

    func open(_ stream: UpstreamStream) {
        if self.waiting.isEmpty, let connection = self.connectionWithRoom() {
            stream.attach(to: connection)
            return
        }
        self.waiting.append(stream)
        self.connectIfNeeded()
    }

    func cancelWaiting(_ stream: UpstreamStream) {
        if let i = self.waiting.firstIndex(where: { $0 === stream }) {
            self.waiting.remove(at: i)
        }
    }

    private func connectionWithRoom() -> UpstreamConnection? {
        for c in self.connections where c.availableStreams > 0 { return c }
        return nil
    }

    /// A connection became ready, finished a stream, or got GOAWAY: hand it waiting streams.
    func capacityChanged(_ connection: UpstreamConnection) {
        self.dispatchWaiting()
    }

    private func dispatchWaiting() {
        while let stream = self.waiting.first {
            guard let connection = self.connectionWithRoom() else {
                self.connectIfNeeded()
                return
            }
            self.waiting.removeFirst()
            stream.attach(to: connection)
        }
    }

    private func connectIfNeeded() {
        guard !self.waiting.isEmpty, self.connecting == 0 else { return }
        // Drop connections that can take nothing more and are done.
        guard self.connections.count < self.loop.configuration.maxUpstreamConnectionsPerLoop else {
            // At the cap: streams wait for room on an existing connection.
            return
        }
        self.connecting += 1
        let loop = self.loop
        let connection = UpstreamConnection(loop: loop, pool: self)
        self.connections.append(connection)
        let handlerBox = NIOLoopBound(connection, eventLoop: loop.eventLoop)
        let configuration = loop.configuration
        ClientBootstrap(group: loop.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = handlerBox.value
                    try channel.pipeline.syncOperations.addTLSHandler(
                        connection.loop.configuration.upstreamTLS, logger: connection.loop.logger)
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: self.host, port: self.port)
            .assumeIsolated()
            .whenComplete { result in
                self.connecting -= 1
                switch result {
                case .success:
                    self.lastConnectError = nil
                case .failure(let error):
                    self.connectFailed(connection, error: error)
                }
                self.loop.flushDirty()
            }
    }

    private func connectFailed(_ connection: UpstreamConnection, error: Error) {
        self.loop.metrics.upstreamConnectErrors.increment()
        self.connections.removeAll { $0 === connection }
        let cause =
            "upstream \(self.host):\(self.port) unreachable: \(Self.describe(error))"
        if self.lastConnectError != cause {
            self.loop.logger.warning("cannot connect to upstream", metadata: ["error": "\(cause)"])
            self.lastConnectError = cause
        }
        let failed = self.waiting
        self.waiting.removeAll()
        for stream in failed { stream.failUnavailable(cause) }
    }

    /// Called by a connection's `channelInactive`.
    func connectionClosed(_ connection: UpstreamConnection, beforeReady: Bool) {
        self.connections.removeAll { $0 === connection }
        if beforeReady && self.connecting == 0 && !self.waiting.isEmpty {
            let failed = self.waiting
            self.waiting.removeAll()
            for stream in failed { stream.failUnavailable("upstream closed the connection before SETTINGS") }
        } else {
            self.dispatchWaiting()
        }
    }

    func closeAll() {
        for c in self.connections { c.close() }
    }

    static func describe(_ error: Error) -> String {
        if let e = error as? NIOConnectionError, let first = e.connectionErrors.first {
            return "\(first.error)"
        }
        return "\(error)"
    }
}
