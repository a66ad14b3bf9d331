import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import OTel
import ServiceLifecycle
import Tracing

/// The sidecar's link to the collector: swift-otel's tracer with its OTLP/HTTP exporter and
/// batch span processor, running in the background until ``stop()``.
///
/// Spans are handed over on the event loop with two short lock-protected steps inside
/// swift-otel (start and end); batching, encoding and the HTTP requests run on swift-otel's
/// own tasks and AsyncHTTPClient's event loops, never on the proxy's. The batch queue is
/// bounded (`tracing.max_queued_spans`).
final class SpanExport: Sendable {
    let tracer: any Tracer
    let metrics: SpanMetrics
    private let group: ServiceGroup
    private let task: NIOLockedValueBox<Task<Void, Never>?> = NIOLockedValueBox(nil)

    /// Builds the backend; nothing is sent until the first batch.
    init(options: TracingOptions, hop: String, region: String, metrics: SpanMetrics, logger: Logger) throws {
        self.metrics = metrics
        let health = NIOLockedValueBox(SpanExportHealth())
        let handler = SpanExportLogHandler(
            report: { event in
                switch event {
                case .exported(let n): metrics.exported.increment(by: UInt64(n))
                case .dropped(let reason, let n): metrics.drop(reason, count: n)
                }
                switch health.withLockedValue({ $0.event(event) }) {
                case .none: break
                case .logFailing(let reason):
                    logger.warning(
                        "span export failing: spans are dropped and counted in insight_spans_dropped_total",
                        metadata: ["reason": "\(reason.rawValue)", "endpoint": "\(options.tracesURL)"])
                case .logRecovered(let dropped):
                    logger.notice(
                        "span export recovered",
                        metadata: ["dropped": "\(dropped)", "endpoint": "\(options.tracesURL)"])
                }
            }, forward: logger)
        var c = OTel.Configuration.default
        c.serviceName = options.serviceName
        c.resourceAttributes = ["insight.hop": hop, "insight.region": region]
        c.diagnosticLogger = .custom(Logger(label: "swift-otel", factory: { _ in handler }))
        c.diagnosticLogLevel = .debug
        c.propagators = [.traceContext]
        // The sidecar has already decided (TraceSampler) before it asks for a span.
        c.traces.sampler = .parentBasedAlwaysOn
        c.traces.batchSpanProcessor.maxQueueSize = options.maxQueuedSpans
        c.traces.batchSpanProcessor.maxExportBatchSize = min(512, options.maxQueuedSpans)
        c.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        c.traces.batchSpanProcessor.exportTimeout = .seconds(5)
        c.traces.otlpExporter.endpoint = options.tracesURL
        c.traces.otlpExporter.protocol = .httpProtobuf
        c.traces.otlpExporter.headers = options.headers.map { ($0.name, $0.value) }
        c.traces.otlpExporter.timeout = .seconds(4)
        c.metrics.enabled = false
        c.logs.enabled = false
        let backend = try OTel.makeTracingBackend(configuration: c)
        self.tracer = backend.factory
        self.group = ServiceGroup(
            configuration: .init(
                services: [backend.service], logger: Logger(label: "swift-otel", factory: { _ in handler })))
    }

    func start() {
        let group = self.group
        self.task.withLockedValue { $0 = Task { try? await group.run() } }
    }

    /// Exports what is queued (within the batch processor's export timeout), then stops.
    func stop() async {
        await self.group.triggerGracefulShutdown()
        if let t = self.task.withLockedValue({ $0 }) { await t.value }
    }
}

extension SpanExport {
    /// Starts span export if `tracing.otlp_endpoint` is set, and gives every event loop's
    /// observer source its ``LoopTracing``.
    static func start(
        config: SidecarConfig, registry: MetricsRegistry, observers: inout HopTimingObserverFactory, logger: Logger
    ) throws -> SpanExport? {
        guard config.tracing.isEnabled, config.timing else { return nil }
        let hop = config.hop ?? ""
        let region = config.region ?? ""
        let export: SpanExport
        do {
            export = try SpanExport(
                options: config.tracing, hop: hop, region: region, metrics: SpanMetrics(registry: registry, hop: hop),
                logger: logger)
        } catch {
            throw SidecarStartError(what: "span export to \(config.tracing.tracesURL)", underlying: "\(error)")
        }
        export.start()
        let sampler = TraceSampler(ratio: config.tracing.sampleRatio)
        let upstream = config.upstream ?? HostPort(host: "", port: 0)
        observers.tracing = {
            LoopTracing(export: export, sampler: sampler, upstream: upstream, hop: hop, region: region)
        }
        logger.info(
            "tracing on",
            metadata: ["endpoint": "\(config.tracing.tracesURL)", "sample_ratio": "\(config.tracing.sampleRatio)"])
        return export
    }
}
