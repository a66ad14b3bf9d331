import AsyncHTTPClient
import Foundation
import H2Proxy
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One running sidecar on a shared event loop group: proxy, admin listener, probes and
/// discovery. `insight-sidecar run` starts one; the demo starts several in one process.
final class SidecarInstance: Sendable {
    let config: SidecarConfig
    let proxy: ProxyServer
    let prober: Prober?
    let status: StatusSource
    let adminChannel: Channel
    /// The admin listener's own thread: `/metrics` and the status API are rendered there, never
    /// on the proxy's event loops, so a scrape does not delay a proxied stream.
    let adminGroup: MultiThreadedEventLoopGroup
    /// The access log's queue and writer thread; stopped (what is queued written) after the drain.
    let accessLog: AccessLog?
    let listening: SocketAddress
    let discovery: [Task<Void, Never>]
    let tlsReloader: TLSReloader?
    let logger: Logger
    /// Span export (`tracing:`); `nil` when tracing is off.
    let spans: SpanExport?
    /// The HTTP client of the Consul watches, on the sidecar's event loops; `nil` without
    /// `probes.consul`. Shut down by ``stop(drainTimeout:)`` once the watches have ended.
    let httpClient: HTTPClient?

    private init(
        config: SidecarConfig, proxy: ProxyServer, prober: Prober?, status: StatusSource, adminChannel: Channel,
        adminGroup: MultiThreadedEventLoopGroup, accessLog: AccessLog?, listening: SocketAddress,
        discovery: [Task<Void, Never>], tlsReloader: TLSReloader?, logger: Logger, spans: SpanExport?,
        httpClient: HTTPClient?
    ) {
        self.adminGroup = adminGroup
        self.accessLog = accessLog
        self.spans = spans
        self.httpClient = httpClient
        self.tlsReloader = tlsReloader
        self.config = config
        self.proxy = proxy
        self.prober = prober
        self.status = status
        self.adminChannel = adminChannel
        self.listening = listening
        self.discovery = discovery
        self.logger = logger
    }

    /// Starts everything; `extraProbers` (the demo's other sidecars) join this one's status page.
    static func start(
        config: SidecarConfig, registry: MetricsRegistry, group: EventLoopGroup, logger: Logger,
        statusWindow: Double = 30, extraProbers: [Prober] = [], demo: (@Sendable () -> DemoState)? = nil,
        demoControl: (@Sendable ([String: String]) -> String?)? = nil
    ) async throws -> SidecarInstance {
        let metrics = ProxyMetrics(registry: registry)
        BuildInfo.register(in: registry)
        let timing = config.timingOptions
        let traffic = TrafficMetrics(
            registry: registry, hop: timing.hop, region: timing.region, maxRoutes: timing.maxRoutes,
            headerErrorReasons: TimingHeaders.Problem.allCases.map(\.rawValue))
        let accessLog = try config.accessLog.map { path throws(ConfigError) in
            try AccessLog(path: path, hop: timing.hop, registry: registry, logger: logger)
        }
        var observers = HopTimingObserverFactory(options: timing, metrics: traffic, accessLog: accessLog)
        let spans = try SpanExport.start(config: config, registry: registry, observers: &observers, logger: logger)
        let probeMetrics = ProbeMetrics(registry: registry, hop: timing.hop, region: timing.region)
        let responder =
            config.receiver ? EchoResponder(hop: timing.hop, region: timing.region, metrics: probeMetrics) : nil
        var proxyConfiguration = config.proxyConfiguration
        proxyConfiguration.faultPrefix = timing.hop
        let tlsReloader = try TLSReloader.configure(
            config: config, registry: registry, proxy: &proxyConfiguration, logger: logger)
        let proxy = ProxyServer(
            configuration: proxyConfiguration, group: group, metrics: metrics,
            observerFactory: config.timing ? observers : nil, localResponder: responder, logger: logger)

        let listening: SocketAddress
        do {
            listening = try await proxy.start()
        } catch {
            tlsReloader?.stop()
            _ = await spans?.stop(within: .zero)
            throw SidecarStartError(what: "listen on \(config.listen)", underlying: UpstreamFailure.describe(error))
        }
        var prober: Prober?
        if config.probes.isEnabled {
            prober = Prober(
                proxy: proxy,
                request: ProbeRequest(
                    hop: timing.hop, region: timing.region, upstream: config.upstream!, config: config.probes),
                metrics: probeMetrics, logger: logger)
        }
        let status = StatusSource(
            hop: timing.hop, region: timing.region, observers: observers.sources,
            probers: (prober.map { [$0] } ?? []) + extraProbers, window: statusWindow, demo: demo,
            demoControl: demoControl)
        let adminGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let admin = AdminServer(
            group: adminGroup, registry: registry,
            readiness: {
                guard proxy.isListening else { return (false, "proxy listener closed") }
                let answer = await proxy.checkReadiness()
                return (answer.isReady, answer.detail)
            }, status: status, idleTimeout: config.adminIdleTimeout)
        let adminChannel: Channel
        do {
            adminChannel = try await admin.start(host: config.admin.host, port: config.admin.port)
        } catch {
            await proxy.drain(timeout: .zero)
            try? await adminGroup.shutdownGracefully()
            tlsReloader?.stop()
            _ = await spans?.stop(within: .zero)
            throw SidecarStartError(
                what: "admin listener on \(config.admin)", underlying: UpstreamFailure.describe(error))
        }
        for warning in config.warnings { logger.warning("\(warning)") }
        logger.info(
            "insight-sidecar started",
            metadata: [
                "listen": "\(listening)", "upstream": "\(config.upstream!)",
                "admin": "\(adminChannel.localAddress.map { "\($0)" } ?? "?")", "region": "\(config.region ?? "")",
                "receiver": "\(config.receiver)",
            ])

        var discovery: [Task<Void, Never>] = []
        var httpClient: HTTPClient?
        if let p = prober {
            p.setTargets(source: "static", config.probes.targets)
            if let path = config.probes.targetsFile {
                discovery.append(
                    TargetDiscovery.watchFile(
                        path: path, every: config.probes.targetsFileRefresh, prober: p, metrics: probeMetrics,
                        logger: logger))
            }
            if let consul = config.probes.consul {
                let client = HTTPClient(
                    eventLoopGroupProvider: .shared(group),
                    configuration: TargetDiscovery.consulClientConfiguration(consul))
                httpClient = client
                discovery.append(
                    TargetDiscovery.watchConsul(
                        config: consul, client: client, prober: p, metrics: probeMetrics, logger: logger))
            }
            p.start()
            logger.info("probes started", metadata: ["static_targets": "\(config.probes.targets.count)"])
        }
        return SidecarInstance(
            config: config, proxy: proxy, prober: prober, status: status, adminChannel: adminChannel,
            adminGroup: adminGroup, accessLog: accessLog, listening: listening, discovery: discovery,
            tlsReloader: tlsReloader, logger: logger, spans: spans,
            httpClient: httpClient)
    }

    func stop(drainTimeout: TimeAmount) async {
        self.prober?.stop()
        for task in self.discovery { task.cancel() }
        await self.proxy.drain(timeout: drainTimeout)
        // The watches end their queries when cancelled; the client must outlive them.
        for task in self.discovery { await task.value }
        try? await self.httpClient?.shutdown()
        self.tlsReloader?.stop()
        if let spans = self.spans {
            // Queued spans get one more export, within 2 s: a collector that is down or hangs
            // must not hold the shutdown past the drain. What is left is counted and logged.
            let lost = await spans.stop(within: .seconds(2))
            if lost > 0 {
                self.logger.warning(
                    "span export did not finish within 2 s at shutdown: queued spans are lost",
                    metadata: ["spans": "\(lost)", "reason": "shutdown"])
            }
        }
        self.accessLog?.stop()
        try? await self.adminChannel.close()
        try? await self.adminGroup.shutdownGracefully()
    }
}
