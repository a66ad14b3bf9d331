import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// The sidecar's own OTLP/HTTP span pipeline (Docs/architecture.md, "Span export", says why
/// it is not swift-otel's).
///
/// Each event loop keeps its ended spans in its ``LoopTracing`` and hands them over here as
/// one batch when 512 have ended or a second after the first: nothing crosses threads per
/// span. The batches wait in an ``ExportQueue`` (bounded by `tracing.max_queued_spans`) for
/// the one exporter task, which encodes them (``OTLPTraceRequest``) and posts them
/// (``OTLPHTTPTransport``), retrying as ``ExportRetry`` says. Every span started ends up in
/// exactly one of `insight_spans_exported_total` and `insight_spans_dropped_total{reason}`.
final class SpanExport: Sendable {
    let metrics: SpanMetrics
    /// Spans per export request, and the per-loop count that hands a batch over at once.
    let batchSize: Int
    /// How long a loop keeps its first ended span before handing over what it has.
    let interval: TimeAmount
    private let resource: [SpanAttribute]
    private let retry: ExportRetry
    private let send: @Sendable (ByteBuffer) async -> ExportOutcome
    private let close: @Sendable () async -> Void
    private let state: NIOLockedValueBox<State>
    private let logger: Logger
    private let endpoint: String

    private struct State {
        var queue: ExportQueue
        var health = SpanExportHealth()
        /// The exporter task, waiting for a batch.
        var waiter: CheckedContinuation<[SpanRecord]?, Never>?
        var loops: [LoopTracing.Handle] = []
        var task: Task<Void, Never>?
        /// Spans counted as `shutdown`.
        var lostAtShutdown = 0
    }

    /// - Parameters:
    ///   - send: posts one encoded request (``OTLPHTTPTransport/send(_:)``; the tests pass a
    ///     fake collector).
    ///   - close: called at the end of ``stop(within:)`` (shuts the HTTP client down).
    init(
        options: TracingOptions, hop: String, region: String, metrics: SpanMetrics, logger: Logger,
        batchSize: Int = 512, interval: TimeAmount = .seconds(1), retry: ExportRetry = ExportRetry(),
        send: @escaping @Sendable (ByteBuffer) async -> ExportOutcome, close: @escaping @Sendable () async -> Void = {}
    ) {
        self.close = close
        self.metrics = metrics
        self.batchSize = batchSize
        self.interval = interval
        self.retry = retry
        self.send = send
        self.logger = logger
        self.endpoint = options.tracesURL
        self.resource = [
            SpanAttribute("service.name", options.serviceName), SpanAttribute("insight.hop", hop),
            SpanAttribute("insight.region", region),
        ]
        self.state = NIOLockedValueBox(State(queue: ExportQueue(capacity: options.maxQueuedSpans)))
    }

    func start() {
        self.state.withLockedValue { $0.task = Task { await self.run() } }
    }

    /// Called once by each loop's ``LoopTracing``, so that ``stop(within:)`` can collect what
    /// the loop still holds.
    func register(_ loop: LoopTracing.Handle) {
        self.state.withLockedValue { $0.loops.append(loop) }
    }

    /// A loop's ended spans (on that loop): queued, or dropped and counted.
    func enqueue(_ spans: [SpanRecord]) {
        let (dropped, waiter, batch, action) = self.state.withLockedValue {
            s -> (
                ExportQueue.Dropped?, CheckedContinuation<[SpanRecord]?, Never>?, [SpanRecord]?, SpanExportHealth.Action
            )
            in
            let dropped = s.queue.offer(spans)
            var action = SpanExportHealth.Action.none
            if let d = dropped {
                if d.reason == .shutdown { s.lostAtShutdown += d.count }
                action = s.health.event(.dropped(d.reason, spans: d.count))
            }
            guard let w = s.waiter, let batch = s.queue.take(max: self.batchSize) else {
                return (dropped, nil, nil, action)
            }
            s.waiter = nil
            return (dropped, w, batch, action)
        }
        if let d = dropped { self.metrics.drop(d.reason, count: d.count) }
        self.log(action)
        waiter?.resume(returning: batch)
    }

    /// The exporter task: one batch at a time until the queue is empty after ``stop(within:)``.
    private func run() async {
        while let batch = await self.next() {
            await self.export(batch)
        }
    }

    private func next() async -> [SpanRecord]? {
        await withCheckedContinuation { c in
            let ready: [SpanRecord]?? = self.state.withLockedValue { s in
                if let b = s.queue.take(max: self.batchSize) { return .some(b) }
                if s.queue.stopping { return .some(nil) }
                s.waiter = c
                return .none
            }
            if let r = ready { c.resume(returning: r) }
        }
    }

    private func export(_ batch: [SpanRecord]) async {
        let body = OTLPTraceRequest.encode(
            batch, resource: self.resource, scope: (name: "insight-sidecar", version: BuildInfo.version))
        let started = ContinuousClock.now
        var attempt = 1
        while true {
            if Task.isCancelled { return self.finish(batch.count, .drop(.shutdown)) }
            let outcome = await self.send(body)
            // Cancelled by the shutdown deadline: the request was abandoned, unless it had
            // already been accepted.
            if Task.isCancelled, !outcome.isAccepted { return self.finish(batch.count, .drop(.shutdown)) }
            let verdict = self.retry.verdict(
                outcome, attempt: attempt, elapsed: ContinuousClock.now - started, spans: batch.count)
            guard case .retry(let delay) = verdict else { return self.finish(batch.count, verdict) }
            try? await Task.sleep(for: delay)
            attempt += 1
        }
    }

    private func finish(_ spans: Int, _ verdict: ExportRetry.Verdict) {
        let action = self.state.withLockedValue { s -> SpanExportHealth.Action in
            switch verdict {
            case .exported(let accepted, let rejected):
                self.metrics.exported.increment(by: UInt64(accepted))
                self.metrics.drop(.rejected, count: rejected)
                return rejected > 0
                    ? s.health.event(.dropped(.rejected, spans: rejected)) : s.health.event(.exported(spans: accepted))
            case .drop(let reason):
                self.metrics.drop(reason, count: spans)
                if reason == .shutdown { s.lostAtShutdown += spans }
                return s.health.event(.dropped(reason, spans: spans))
            case .retry:
                return .none
            }
        }
        self.log(action)
    }

    private func log(_ action: SpanExportHealth.Action) {
        switch action {
        case .none: break
        case .logFailing(let reason):
            self.logger.warning(
                "span export failing: spans are dropped and counted in insight_spans_dropped_total",
                metadata: ["reason": "\(reason.rawValue)", "endpoint": "\(self.endpoint)"])
        case .logRecovered(let dropped):
            self.logger.notice(
                "span export recovered", metadata: ["dropped": "\(dropped)", "endpoint": "\(self.endpoint)"])
        }
    }

    /// Collects the spans the loops still hold and exports what is queued, for at most
    /// `within`; what is left then is dropped and counted (`shutdown`), as is every span that
    /// ends later.
    ///
    /// - Returns: the spans lost at shutdown.
    func stop(within: Duration) async -> Int {
        let loops = self.state.withLockedValue { $0.loops }
        for loop in loops { await loop.stop() }
        let (waiter, task) = self.state.withLockedValue { s in
            s.queue.stop()
            defer { s.waiter = nil }
            return (s.waiter, s.task)
        }
        waiter?.resume(returning: nil)
        let deadline = Task {
            try? await Task.sleep(for: within)
            task?.cancel()
        }
        await task?.value
        deadline.cancel()
        await self.close()
        return self.state.withLockedValue { $0.lostAtShutdown }
    }
}

extension SpanExport {
    /// Starts span export if `tracing.otlp_endpoint` is set, and gives every event loop's
    /// observer source its ``LoopTracing``.
    ///
    static func start(
        config: SidecarConfig, registry: MetricsRegistry, observers: inout HopTimingObserverFactory, logger: Logger
    ) throws -> SpanExport? {
        guard config.tracing.isEnabled, config.timing else { return nil }
        let hop = config.hop ?? ""
        let region = config.region ?? ""
        let transport = OTLPHTTPTransport(options: config.tracing)
        let export = SpanExport(
            options: config.tracing, hop: hop, region: region, metrics: SpanMetrics(registry: registry, hop: hop),
            logger: logger, send: { await transport.send($0) }, close: { await transport.shutdown() })
        export.start()
        let sampler = TraceSampler(ratio: config.tracing.sampleRatio)
        let upstream = config.upstream ?? HostPort(host: "", port: 0)
        observers.tracing = { loop in
            LoopTracing(export: export, loop: loop, sampler: sampler, upstream: upstream, hop: hop, region: region)
        }
        logger.info(
            "tracing on",
            metadata: ["endpoint": "\(config.tracing.tracesURL)", "sample_ratio": "\(config.tracing.sampleRatio)"])
        return export
    }
}
