import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix

/// The operator's HTTP/1.1 listener: `/healthz`, `/readyz`, `/metrics`, the status page and its API.
///
/// `group` should be its own (``SidecarInstance`` gives it one thread): `/metrics` is rendered on
/// the listener's event loop, so on the proxy's loops a scrape would delay proxied streams.
public final class AdminServer: Sendable {
    public typealias Readiness = @Sendable () async -> (ready: Bool, detail: String)

    let group: EventLoopGroup
    let registry: MetricsRegistry
    let readiness: Readiness
    let status: StatusSource?

    public convenience init(group: EventLoopGroup, registry: MetricsRegistry, readiness: @escaping Readiness) {
        self.init(group: group, registry: registry, readiness: readiness, status: nil)
    }

    init(group: EventLoopGroup, registry: MetricsRegistry, readiness: @escaping Readiness, status: StatusSource?) {
        self.group = group
        self.registry = registry
        self.readiness = readiness
        self.status = status
    }

    public func start(host: String, port: Int) async throws -> Channel {
        let registry = self.registry
        let readiness = self.readiness
        let status = self.status
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHandler(registry: registry, readiness: readiness, status: status))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}
