import Foundation
import H2Proxy
import Metrics
import NIOCore

/// One event loop's part of tracing: the sampling draws and the ids of unsampled traces come
/// from a loop-local generator, so a stream that gets no span costs no lock and no system call.
final class LoopTracing {
    let export: SpanExport
    let loop: EventLoop
    let sampler: TraceSampler
    /// `server.address` and `server.port` of the spans: the hop this sidecar calls.
    let upstream: HostPort
    let hop: String
    let region: String
    private var random: Xoshiro256
    /// Spans ended on this loop and not yet handed to ``SpanExport``: at most
    /// `export.batchSize`, kept for at most `export.interval`.
    private var ended: [SpanRecord] = []
    private var handOverScheduled = false
    /// Set by ``SpanExport/stop(within:)``: spans that end later are dropped as `shutdown`.
    private var stopped = false

    init(export: SpanExport, loop: EventLoop, sampler: TraceSampler, upstream: HostPort, hop: String, region: String) {
        self.export = export
        self.loop = loop
        self.sampler = sampler
        self.upstream = upstream
        self.hop = hop
        self.region = region
        var seed = SystemRandomNumberGenerator()
        self.random = Xoshiro256(seed: &seed)
        export.register(Handle(tracing: self))
    }

    /// Applies the trace context rules to the request about to go upstream and starts the
    /// stream's span if the trace is sampled.
    ///
    /// - Returns: the correlation id (the trace id), or `nil` when the caller's unsampled
    ///   `traceparent` goes on unchanged (the timing code then reads the id from it).
    func begin(
        _ headers: inout HeaderBlock, observer: HopTimingObserver, receivedAt: NIODeadline
    ) -> TraceID? {
        let found = TraceParent.find(in: headers)
        if found == .invalid { self.export.metrics.invalidTraceparent.increment() }
        switch self.sampler.decide(found, draw: self.random.next()) {
        case .followUnsampled:
            return nil
        case .startUnsampled:
            let tp = TraceParent(
                traceID: self.newTraceID(headers), parentID: self.nonZero(), flags: 0)
            return self.replace(&headers, with: tp, newTrace: true)
        case .sample(let caller):
            // No traceparent but a valid insight-id from a hop that does not trace: the trace
            // continues that id (under a placeholder parent span id), so the call keeps one
            // correlation id at every hop, sampled or not, as the unsampled path does.
            var parent = caller
            if parent == nil, let id = Self.insightTraceID(headers) {
                parent = TraceParent(traceID: id, parentID: self.nonZero(), flags: 1)
            }
            let own = TraceParent(
                traceID: parent?.traceID ?? (self.nonZero(), self.random.next()), parentID: self.nonZero(),
                flags: parent?.flags ?? 1)
            let clock = EpochClock(offsetNanos: observer.clock.wallClockOffsetNanos())
            self.export.metrics.started.increment()
            observer.span = StreamSpan(
                context: own, parentSpanID: parent?.parentID ?? 0,
                traceState: caller == nil ? "" : headers.first("tracestate") ?? "", clock: clock,
                startNanos: clock.nanos(receivedAt), request: StreamSpan.Request(headers, isGRPC: observer.isGRPC),
                tracing: self)
            return self.replace(&headers, with: own, newTrace: caller == nil)
        }
    }

    /// Keeps an ended span for the next hand-over (on this loop; no lock, no allocation
    /// beyond the buffer's growth).
    func spanEnded(_ span: SpanRecord) {
        guard !self.stopped else {
            self.export.enqueue([span])  // counted as `shutdown`
            return
        }
        self.ended.append(span)
        if self.ended.count >= self.export.batchSize {
            self.handOver()
        } else if !self.handOverScheduled {
            self.handOverScheduled = true
            self.loop.assumeIsolated().scheduleTask(in: self.export.interval) {
                self.handOverScheduled = false
                self.handOver()
            }
        }
    }

    /// One batch to the exporter: one lock and at most one task wake-up for all of them.
    private func handOver() {
        guard !self.ended.isEmpty else { return }
        let batch = self.ended
        self.ended.removeAll(keepingCapacity: true)
        self.export.enqueue(batch)
    }

    /// This loop's tracing as ``SpanExport`` keeps it: touched only on `loop`.
    struct Handle: @unchecked Sendable {
        let tracing: LoopTracing

        /// Hands over what the loop holds and drops (as `shutdown`) whatever ends later.
        func stop() async {
            let handle = self
            try? await self.tracing.loop.submit {
                handle.tracing.stopped = true
                handle.tracing.handOver()
            }.get()
        }
    }

    /// Writes `traceparent` (one field: later ones are removed); a new trace drops the old
    /// `tracestate` (it belonged to no trace this one continues). The returned trace id is the
    /// correlation id, which the observer then writes into `insight-id` (``CorrelationID/align(_:in:)``).
    private func replace(_ headers: inout HeaderBlock, with tp: TraceParent, newTrace: Bool) -> TraceID {
        // New on every call: never indexed, like the timing fields (Docs/protocol.md).
        tp.withFormattedBytes { headers.replace(name: "traceparent", value: $0, flags: TimingHeaders.neverIndexed) }
        if newTrace { headers.remove(name: "tracestate") }
        return TraceID(high: tp.traceID.high, low: tp.traceID.low)
    }

    /// A new unsampled trace keeps a valid incoming `insight-id` as its trace id, so that the
    /// hops before this one (which may not trace) and the trace agree on the correlation id.
    private func newTraceID(_ headers: HeaderBlock) -> (high: UInt64, low: UInt64) {
        Self.insightTraceID(headers) ?? (self.nonZero(), self.random.next())
    }

    /// A valid, non-zero 32-hex-digit `insight-id`, as a trace id.
    private static func insightTraceID(_ headers: HeaderBlock) -> (high: UInt64, low: UInt64)? {
        guard let id = headers.first("insight-id"), CorrelationID.isHexID(id),
            let high = UInt64(id.prefix(16), radix: 16), let low = UInt64(id.suffix(16), radix: 16), high | low != 0
        else { return nil }
        return (high, low)
    }

    private func nonZero() -> UInt64 {
        let v = self.random.next()
        return v == 0 ? 1 : v
    }
}
