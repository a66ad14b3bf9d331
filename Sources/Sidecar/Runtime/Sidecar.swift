import Foundation
import H2Proxy
import Logging
import Metrics
import NIOCore
import NIOPosix

/// The running application: proxy listener, admin listener, signals, graceful drain.
public final class Sidecar: Sendable {
    public let config: SidecarConfig
    /// Every series of this sidecar; each event loop records into its own cells of the
    /// counters and histograms it touches per stream (``MetricShard``).
    public let registry: MetricsRegistry

    public init(config: SidecarConfig) {
        self.config = config
        self.registry = MetricsRegistry(loopShards: Self.eventLoopCount(config))
    }

    /// Event loops the proxy runs: `--event-loops`, or one per core when 0.
    static func eventLoopCount(_ config: SidecarConfig) -> Int {
        config.eventLoops == 0 ? System.coreCount : config.eventLoops
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

        let threads = Self.eventLoopCount(self.config)
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
