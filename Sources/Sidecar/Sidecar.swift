import Foundation
import H2Proxy
import Logging
import Metrics
import NIOCore
import NIOPosix

/// A failure to start (a port in use, say): exit code 1, unlike configuration errors.
public struct SidecarStartError: Error, CustomStringConvertible {
    public var what: String
    public var underlying: String
    public var description: String { "cannot start: \(self.what): \(self.underlying)" }
}

/// The running application: proxy listener, admin listener, signals, graceful drain.
public final class Sidecar: Sendable {
    public let config: SidecarConfig
    public let registry = MetricsRegistry()

    public init(config: SidecarConfig) {
        self.config = config
    }

    public func run() async throws {
        let level = self.config.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "insight")
        logger[metadataKey: "hop"] = "\(self.config.hop ?? "")"

        let threads = self.config.eventLoops == 0 ? System.coreCount : self.config.eventLoops
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let signals = SignalWaiter(signals: [SIGTERM, SIGINT])
        let instance: SidecarInstance
        do {
            instance = try await SidecarInstance.start(
                config: self.config, registry: self.registry, group: group, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let trimmer = MemoryTrimmer(eventLoop: group.next(), logger: logger)
        let idleReload = instance.tlsReloader == nil ? IdleReloadSignal(logger: logger) : nil
        defer { idleReload?.stop() }
        // An upstream that is down at start is said once, and again once it is up (checked every
        // second until then); later failures are logged by the connection pools.
        let startCheck = Task { [proxy = instance.proxy, upstream = self.config.upstream!] in
            var warned = false
            while !Task.isCancelled {
                let readiness = await proxy.checkReadiness()
                if readiness.isReady {
                    if warned { logger.notice("upstream reachable", metadata: ["upstream": "\(upstream)"]) }
                    return
                }
                if !warned {
                    warned = true
                    logger.warning(
                        "upstream unreachable at start: calls fail with UNAVAILABLE until it is up",
                        metadata: ["upstream": "\(upstream)", "error": "\(readiness.detail)"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { startCheck.cancel() }
        let signal = await signals.next()
        logger.info(
            "signal received, draining",
            metadata: [
                "signal": "\(SignalWaiter.name(signal))",
                "drain_timeout": "\(DurationValue.format(self.config.drainTimeout))",
            ])
        let drain = Task { await instance.stop(drainTimeout: self.config.drainTimeout) }
        // A second SIGTERM or SIGINT while draining: stop waiting for the streams in flight and
        // end them now (what an operator pressing Ctrl-C twice means).
        let impatience = Task {
            let second = await signals.next()
            guard !Task.isCancelled, second != 0 else { return }
            logger.warning(
                "second signal received: ending the drain now", metadata: ["signal": "\(SignalWaiter.name(second))"])
            drain.cancel()
        }
        await drain.value
        impatience.cancel()
        trimmer.stop()
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }
}

/// A command that could not do its job (not a configuration error): a one-line message and
/// an exit code.
public struct CommandFailure: Error, CustomStringConvertible {
    public var message: String
    public var exitCode: Int32
    public var description: String { self.message }
}

/// One running sidecar on a shared event loop group: proxy, admin listener, probes and
/// discovery. `insight-sidecar run` starts one; the demo starts several in one process.
final class SidecarInstance: Sendable {
    let config: SidecarConfig
    let proxy: ProxyServer
    let prober: Prober?
    let status: StatusSource
    let adminChannel: Channel
    let listening: SocketAddress
    let discovery: [Task<Void, Never>]
    let tlsReloader: TLSReloader?
    let logger: Logger
    /// Span export (`tracing:`); `nil` when tracing is off.
    let spans: SpanExport?

    private init(
        config: SidecarConfig, proxy: ProxyServer, prober: Prober?, status: StatusSource, adminChannel: Channel,
        listening: SocketAddress, discovery: [Task<Void, Never>], tlsReloader: TLSReloader?, logger: Logger,
        spans: SpanExport?
    ) {
        self.spans = spans
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
            try AccessLog(path: path, hop: timing.hop)
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
            await spans?.stop()
            throw SidecarStartError(what: "listen on \(config.listen)", underlying: "\(error)")
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
        let admin = AdminServer(
            group: group, registry: registry,
            readiness: {
                guard proxy.isListening else { return (false, "proxy listener closed") }
                let answer = await proxy.checkReadiness()
                return (answer.isReady, answer.detail)
            }, status: status)
        let adminChannel: Channel
        do {
            adminChannel = try await admin.start(host: config.admin.host, port: config.admin.port)
        } catch {
            await proxy.drain(timeout: .zero)
            tlsReloader?.stop()
            await spans?.stop()
            throw SidecarStartError(what: "admin listener on \(config.admin)", underlying: "\(error)")
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
        if let p = prober {
            p.setTargets(source: "static", config.probes.targets)
            if let path = config.probes.targetsFile {
                discovery.append(
                    TargetDiscovery.watchFile(
                        path: path, every: config.probes.targetsFileRefresh, prober: p, metrics: probeMetrics,
                        logger: logger))
            }
            if let consul = config.probes.consul {
                discovery.append(
                    TargetDiscovery.watchConsul(
                        config: consul, group: group, prober: p, metrics: probeMetrics, logger: logger))
            }
            p.start()
            logger.info("probes started", metadata: ["static_targets": "\(config.probes.targets.count)"])
        }
        return SidecarInstance(
            config: config, proxy: proxy, prober: prober, status: status, adminChannel: adminChannel,
            listening: listening, discovery: discovery, tlsReloader: tlsReloader, logger: logger, spans: spans)
    }

    func stop(drainTimeout: TimeAmount) async {
        self.prober?.stop()
        for task in self.discovery { task.cancel() }
        await self.proxy.drain(timeout: drainTimeout)
        self.tlsReloader?.stop()
        await self.spans?.stop()
        try? await self.adminChannel.close()
    }
}

/// Turns SIGTERM/SIGINT into an awaitable value.
final class SignalWaiter: @unchecked Sendable {
    private let stream: AsyncStream<Int32>
    private let sources: [DispatchSourceSignal]

    init(signals: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        var sources: [DispatchSourceSignal] = []
        for sig in signals {
            Foundation.signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { continuation.yield(sig) }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// The next signal, or 0 when the waiting task is cancelled.
    func next() async -> Int32 {
        for await sig in self.stream { return sig }
        return 0
    }

    /// "SIGTERM" rather than 15.
    static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGHUP: "SIGHUP"
        default: "signal \(signal)"
        }
    }
}

/// SIGHUP reloads certificates; without TLS there is nothing to reload, and the signal is
/// logged (once per signal) rather than ignored without a word or ending the process.
final class IdleReloadSignal: @unchecked Sendable {
    private let source: DispatchSourceSignal

    init(logger: Logger) {
        Foundation.signal(SIGHUP, SIG_IGN)
        self.source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        self.source.setEventHandler {
            logger.notice("SIGHUP received: no TLS certificates configured, nothing to reload")
        }
        self.source.resume()
    }

    func stop() { self.source.cancel() }
}
