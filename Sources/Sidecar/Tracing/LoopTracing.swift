import Foundation
import H2Proxy
import NIOCore
import Tracing

/// One event loop's part of tracing: the sampling draws and the ids of unsampled traces come
/// from a loop-local generator, so a stream that gets no span costs no lock and no system call.
final class LoopTracing {
    let export: SpanExport
    let sampler: TraceSampler
    /// `server.address` and `server.port` of the spans: the hop this sidecar calls.
    let upstream: HostPort
    let hop: String
    let region: String
    private var random: Xoshiro256

    init(export: SpanExport, sampler: TraceSampler, upstream: HostPort, hop: String, region: String) {
        self.export = export
        self.sampler = sampler
        self.upstream = upstream
        self.hop = hop
        self.region = region
        var seed = SystemRandomNumberGenerator()
        self.random = Xoshiro256(seed: &seed)
    }

    /// Applies the trace context rules to the request about to go upstream and starts the
    /// stream's span if the trace is sampled.
    ///
    /// - Returns: the correlation id (the trace id), or `nil` when the caller's unsampled
    ///   `traceparent` goes on unchanged (the timing code then reads the id from it).
    func begin(
        _ headers: inout HeaderBlock, observer: HopTimingObserver, receivedAt: NIODeadline
    ) -> String? {
        let found = TraceParent.find(in: headers)
        if found == .invalid { self.export.metrics.invalidTraceparent.increment() }
        switch self.sampler.decide(found, draw: self.random.next()) {
        case .followUnsampled:
            return nil
        case .startUnsampled:
            let tp = TraceParent(
                traceID: self.newTraceID(headers), parentID: self.nonZero(), flags: 0)
            return self.replace(&headers, with: tp, newTrace: true)
        case .sample(var parent):
            // No traceparent but a valid insight-id from a hop that does not trace: the trace
            // continues that id (under a placeholder parent span id), so the call keeps one
            // correlation id at every hop, sampled or not, as the unsampled path does.
            if parent == nil, let id = Self.insightTraceID(headers) {
                parent = TraceParent(traceID: id, parentID: self.nonZero(), flags: 1)
            }
            let clock = EpochClock(offsetNanos: observer.clock.wallClockOffsetNanos())
            let request = StreamSpan.Request(headers, isGRPC: observer.isGRPC)
            var context = ServiceContext.topLevel
            if let parent {
                let carrier = TraceCarrier(
                    traceparent: parent.formatted, tracestate: headers.first("tracestate"))
                self.export.tracer.extract(carrier, into: &context, using: TraceCarrier.Extract())
            }
            let span = self.export.tracer.startSpan(
                request.name, context: context, ofKind: .client, at: clock.instant(receivedAt))
            var out = TraceCarrier()
            self.export.tracer.inject(span.context, into: &out, using: TraceCarrier.Inject())
            guard let text = out.traceparent, let own = TraceParent(Array(text.utf8)) else {
                // swift-otel always injects for a recording span; if it ever does not, the
                // span is still exported and the request keeps the caller's context.
                observer.span = StreamSpan(span: span, clock: clock, request: request, tracing: self)
                return nil
            }
            self.export.metrics.started.increment()
            observer.span = StreamSpan(span: span, clock: clock, request: request, tracing: self)
            return self.replace(&headers, with: own, newTrace: parent == nil)
        }
    }

    /// Writes `traceparent`; a new trace drops the old `tracestate` (it belonged to no trace
    /// this one continues) and brings `insight-id` into line with the trace id.
    private func replace(_ headers: inout HeaderBlock, with tp: TraceParent, newTrace: Bool) -> String {
        headers.replace(name: "traceparent", value: tp.formatted)
        let id = tp.traceIDHex
        if newTrace { headers.remove(name: "tracestate") }
        // The trace id is the correlation id: an `insight-id` that says otherwise is brought
        // into line, so the hops after this one agree with the trace.
        if let i = headers.firstIndex(of: "insight-id"), !headers.value(at: i).elementsEqual(id.utf8) {
            headers.replace(name: "insight-id", value: id)
        }
        return id
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
