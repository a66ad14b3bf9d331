import Foundation
import H2Proxy
import Logging
import Metrics

/// Reloads certificates and keys on SIGHUP and when their files change (mtime, size or inode,
/// polled). New connections get the new context; open ones keep theirs. A file that does not
/// load leaves the previous context in use.
final class TLSReloader: @unchecked Sendable {
    private let config: SidecarConfig
    private let server: TLSEndpoint?
    private let client: TLSEndpoint?
    private let logger: Logger
    private let interval: Duration
    private let reloaded: Counter
    private let failed: Counter
    private let registry: MetricsRegistry
    private let signalSource: DispatchSourceSignal
    private var task: Task<Void, Never>?

    private enum Trigger: String {
        case signal = "SIGHUP"
        case poll = "file change"
    }

    init(
        config: SidecarConfig, server: TLSEndpoint?, client: TLSEndpoint?, registry: MetricsRegistry, logger: Logger,
        interval: Duration = .seconds(2)
    ) {
        self.config = config
        self.server = server
        self.client = client
        self.logger = logger
        self.interval = interval
        self.registry = registry
        let name = "insight_tls_reloads_total"
        let help = "Certificate reloads (SIGHUP or file change), by result."
        self.reloaded = registry.counter(name, help: help, labels: [("result", "ok")])
        self.failed = registry.counter(name, help: help, labels: [("result", "failed")])
        Foundation.signal(SIGHUP, SIG_IGN)
        self.signalSource = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    }

    func start() {
        let (stream, continuation) = AsyncStream<Trigger>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.signalSource.setEventHandler { continuation.yield(.signal) }
        self.signalSource.resume()
        let interval = self.interval
        self.task = Task {
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    continuation.yield(.poll)
                }
            }
            defer { ticker.cancel() }
            var seen = self.fingerprints()
            for await trigger in stream {
                if Task.isCancelled { break }
                let now = self.fingerprints()
                if trigger == .poll && now == seen { continue }
                seen = now
                self.reload(trigger)
            }
        }
    }

    func stop() {
        self.task?.cancel()
        self.signalSource.cancel()
    }

    private func reload(_ trigger: Trigger) {
        do {
            let contexts = try self.config.makeTLSContexts()
            if let context = contexts.server { self.server?.replace(with: context) }
            if let context = contexts.client { self.client?.replace(with: context) }
            self.reloaded.increment()
            self.logger.info(
                "TLS certificates reloaded; new connections use them", metadata: ["trigger": "\(trigger.rawValue)"])
            Self.checkExpiry(config: self.config, registry: self.registry, logger: self.logger)
        } catch {
            self.failed.increment()
            self.logger.error(
                "TLS certificate reload failed; keeping the certificates in use",
                metadata: ["trigger": "\(trigger.rawValue)", "error": "\(error)"])
        }
    }

    private struct Fingerprint: Equatable {
        var seconds: Int
        var nanoseconds: Int
        var size: Int
        var inode: UInt64
    }

    private func fingerprints() -> [String: Fingerprint] {
        var result: [String: Fingerprint] = [:]
        let files = (self.config.tls?.files ?? []) + (self.config.upstreamTLS?.files ?? [])
        for path in files {
            var st = stat()
            guard stat(path, &st) == 0 else { continue }
            result[path] = Fingerprint(
                seconds: Int(st.st_mtim.tv_sec), nanoseconds: Int(st.st_mtim.tv_nsec), size: Int(st.st_size),
                inode: UInt64(st.st_ino))
        }
        return result
    }
}

extension TLSReloader {
    /// Loads the TLS files, sets them on `proxy`, and starts watching them for changes.
    static func configure(
        config: SidecarConfig, registry: MetricsRegistry, proxy: inout ProxyConfiguration, logger: Logger
    ) throws(ConfigError) -> TLSReloader? {
        let contexts = try config.makeTLSContexts()
        let metrics = TLSMetrics(registry: registry)
        proxy.tlsMetrics = metrics
        checkExpiry(config: config, registry: registry, logger: logger)
        guard contexts.server != nil || contexts.client != nil else {
            // SIGHUP means "reload certificates"; with none to reload it must not end the process.
            Foundation.signal(SIGHUP, SIG_IGN)
            return nil
        }
        if let context = contexts.server {
            proxy.downstreamTLS = TLSEndpoint(
                side: .downstream, context: context, metrics: metrics, handshakeTimeout: config.limits.handshakeTimeout)
            let tls = config.tls!
            logger.info(
                "TLS towards clients",
                metadata: [
                    "cert": "\(tls.cert ?? "")",
                    "client_cert":
                        "\(tls.clientCA == nil ? "not requested" : tls.requireClientCert ? "required" : "optional")",
                ])
        }
        if let context = contexts.client {
            proxy.upstreamTLS = TLSEndpoint(
                side: .upstream, context: context, metrics: metrics, handshakeTimeout: config.limits.handshakeTimeout)
            let tls = config.upstreamTLS!
            if tls.insecureSkipVerify {
                logger.warning(
                    "INSECURE: upstream_tls.insecure_skip_verify is on: the upstream certificate is NOT verified; anyone on the path can impersonate the upstream"
                )
            }
            logger.info(
                "TLS towards the upstream",
                metadata: [
                    "server_name": "\(tls.serverName ?? config.upstream?.host ?? "")",
                    "ca": "\(tls.ca ?? "system trust store")", "client_cert": "\(tls.cert ?? "none")",
                ])
        }
        let reloader = TLSReloader(
            config: config, server: proxy.downstreamTLS, client: proxy.upstreamTLS, registry: registry,
            logger: logger)
        reloader.start()
        return reloader
    }

    /// Logs a warning for each certificate that is expired or expires within 14 days, and sets
    /// `insight_tls_certificate_expiry_timestamp_seconds`.
    static func checkExpiry(config: SidecarConfig, registry: MetricsRegistry, logger: Logger) {
        guard config.tls != nil || config.upstreamTLS != nil else { return }
        let expiry = CertificateExpiry(config: config)
        expiry.export(to: registry)
        for warning in expiry.warnings() { logger.warning("\(warning)") }
    }
}
