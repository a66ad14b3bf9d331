import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The operator's HTTP/1.1 listener: `/healthz`, `/readyz`, `/metrics`, the status page and its API.
///
/// `group` should be its own (``SidecarInstance`` gives it one thread): `/metrics` is rendered on
/// the listener's event loop, so on the proxy's loops a scrape would delay proxied streams.
///
/// What one client can cost is bounded: one request in flight per connection and no response
/// rendered while the previous one is not taken off the send buffer (``AdminHandler/StateMachine``),
/// a connection closed after `idleTimeout` without progress, and at most `maxConnections` open
/// (past that the oldest is closed, see ``Connections``).
public final class AdminServer: Sendable {
    public typealias Readiness = @Sendable () async -> (ready: Bool, detail: String)

    /// Open admin connections at most; past that the oldest is closed.
    public static let defaultMaxConnections = 256

    let group: EventLoopGroup
    let registry: MetricsRegistry
    let readiness: Readiness
    let status: StatusSource?
    /// How long a connection may go without a complete request or a response taken by the client.
    let idleTimeout: TimeAmount
    let maxConnections: Int
    private let connections: NIOLockedValueBox<(Connections, [ObjectIdentifier: Channel])>

    public convenience init(group: EventLoopGroup, registry: MetricsRegistry, readiness: @escaping Readiness) {
        self.init(group: group, registry: registry, readiness: readiness, status: nil)
    }

    init(
        group: EventLoopGroup, registry: MetricsRegistry, readiness: @escaping Readiness, status: StatusSource?,
        idleTimeout: TimeAmount = .seconds(30), maxConnections: Int = AdminServer.defaultMaxConnections
    ) {
        self.group = group
        self.registry = registry
        self.readiness = readiness
        self.status = status
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.connections = NIOLockedValueBox((Connections(maxConnections: maxConnections), [:]))
    }

    public func start(host: String, port: Int) async throws -> Channel {
        let registry = self.registry
        let readiness = self.readiness
        let status = self.status
        let idleTimeout = self.idleTimeout
        let connections = self.connections
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let id = ObjectIdentifier(channel)
                let evicted = connections.withLockedValue { state -> Channel? in
                    state.1[id] = channel
                    guard let oldest = state.0.opened(id) else { return nil }
                    return state.1.removeValue(forKey: oldest)
                }
                evicted?.close(promise: nil)
                channel.closeFuture.whenComplete { _ in
                    connections.withLockedValue { state in
                        state.0.closed(id)
                        state.1[id] = nil
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true)
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHandler(registry: registry, readiness: readiness, status: status, idleTimeout: idleTimeout)
                    )
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}
