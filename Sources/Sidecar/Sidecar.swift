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
        let metrics = ProxyMetrics(registry: self.registry)
        let timing = self.config.timingOptions
        let traffic = TrafficMetrics(
            registry: self.registry, hop: timing.hop, region: timing.region, maxRoutes: timing.maxRoutes,
            headerErrorReasons: TimingHeaders.Problem.allCases.map(\.rawValue))
        let accessLog = try self.config.accessLog.map { path throws(ConfigError) in
            try AccessLog(path: path, hop: timing.hop)
        }
        let observers = HopTimingObserverFactory(options: timing, metrics: traffic, accessLog: accessLog)
        var proxyConfiguration = self.config.proxyConfiguration
        let tlsReloader: TLSReloader?
        do {
            tlsReloader = try self.configureTLS(&proxyConfiguration, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        defer { tlsReloader?.stop() }
        let proxy = ProxyServer(
            configuration: proxyConfiguration, group: group, metrics: metrics,
            observerFactory: self.config.timing ? observers : nil,
            logger: logger)

        let signals = SignalWaiter(signals: [SIGTERM, SIGINT])
        let listening: SocketAddress
        do {
            listening = try await proxy.start()
        } catch {
            try? await group.shutdownGracefully()
            throw SidecarStartError(what: "listen on \(self.config.listen)", underlying: "\(error)")
        }
        let admin = AdminServer(group: group, registry: self.registry) {
            guard proxy.isListening else { return (false, "proxy listener closed") }
            let up = await proxy.checkUpstream()
            return up
                ? (true, "upstream reachable")
                : (
                    false,
                    "upstream \(proxy.configuration.upstreamHost):\(proxy.configuration.upstreamPort) unreachable"
                )
        }
        let adminChannel: Channel
        do {
            adminChannel = try await admin.start(host: self.config.admin.host, port: self.config.admin.port)
        } catch {
            await proxy.drain(timeout: .zero)
            try? await group.shutdownGracefully()
            throw SidecarStartError(what: "admin listener on \(self.config.admin)", underlying: "\(error)")
        }
        logger.info(
            "insight-sidecar started",
            metadata: [
                "listen": "\(listening)", "upstream": "\(self.config.upstream!)",
                "admin": "\(adminChannel.localAddress.map { "\($0)" } ?? "?")",
                "region": "\(self.config.region ?? "")", "event_loops": "\(threads)",
            ])

        let signal = await signals.next()
        logger.info(
            "signal received, draining",
            metadata: ["signal": "\(signal)", "drain_timeout": "\(DurationValue.format(self.config.drainTimeout))"])
        await proxy.drain(timeout: self.config.drainTimeout)
        try? await adminChannel.close()
        try? await group.shutdownGracefully()
        logger.info("stopped")
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

    func next() async -> Int32 {
        for await sig in self.stream { return sig }
        return 0
    }
}
