import H2Proxy
import NIOCore

/// The span of one forwarded stream of a sampled trace: started when the request headers
/// are forwarded, ended with the stream, with the hop's measurements as attributes.
final class StreamSpan {
    /// The trace id, this span's id (as `parentID`) and the flags forwarded upstream.
    let context: TraceParent
    /// The caller's span id; 0 for the root of a new trace.
    let parentSpanID: UInt64
    /// The caller's `tracestate`; empty for a new trace.
    let traceState: String
    let clock: EpochClock
    let startNanos: UInt64
    let request: Request
    unowned let tracing: LoopTracing

    init(
        context: TraceParent, parentSpanID: UInt64, traceState: String, clock: EpochClock, startNanos: UInt64,
        request: Request, tracing: LoopTracing
    ) {
        self.context = context
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.clock = clock
        self.startNanos = startNanos
        self.request = request
        self.tracing = tracing
    }

    /// What the request says about the call, read once for a sampled stream.
    struct Request {
        /// `<service>/<method>` for gRPC, `<METHOD> <route>` otherwise.
        var name: String
        var isGRPC: Bool
        var service: String
        var method: String
        var httpMethod: String

        init(_ headers: HeaderBlock, isGRPC: Bool) {
            let path = headers.first(":path") ?? "/"
            let (service, method) = HopTimingObserverSource.serviceAndMethod(path)
            self.isGRPC = isGRPC
            self.service = service
            self.method = method
            self.httpMethod = headers.first(":method") ?? "GET"
            self.name = isGRPC ? "\(service)/\(method)" : "\(self.httpMethod) \(method)"
        }
    }

    /// Sets the attributes and status from the hop's measurements and ends the span at `at`.
    func end(_ o: HopTimingObserver, at: NIODeadline) {
        self.tracing.spanEnded(self.record(o.summary, source: o.sourceLabel, failure: o.failureMessage, at: at))
    }

    /// The finished span, from the hop's measurements.
    func record(_ s: HopTimingObserver.Summary, source: String, failure: String?, at: NIODeadline) -> SpanRecord {
        let t = self.tracing
        var a: [SpanAttribute] = []
        a.reserveCapacity(16 + s.segments.count)
        a.append(SpanAttribute("server.address", t.upstream.host))
        a.append(SpanAttribute("server.port", t.upstream.port))
        if self.request.isGRPC {
            a.append(SpanAttribute("rpc.system", "grpc"))
            a.append(SpanAttribute("rpc.service", self.request.service))
            a.append(SpanAttribute("rpc.method", self.request.method))
            if let n = GRPCStatusName.names.firstIndex(of: s.code) {
                a.append(SpanAttribute("rpc.grpc.status_code", n))
            }
        } else {
            a.append(SpanAttribute("http.request.method", self.request.httpMethod))
            // Not `http.route`: that is the server's matched route template, which a proxy does
            // not know; the first path segment (the metrics' route label) goes in insight.route.
            a.append(SpanAttribute("insight.route", self.request.method))
            if let status = Int(s.code) { a.append(SpanAttribute("http.response.status_code", status)) }
        }
        a.append(SpanAttribute("insight.hop", t.hop))
        a.append(SpanAttribute("insight.region", t.region))
        a.append(SpanAttribute("insight.source", source))
        a.append(SpanAttribute("insight.code", s.code))
        // Microseconds, as `insight-timing` carries them (no binary-fraction noise).
        if let d = s.dur { a.append(SpanAttribute("insight.dur_ms", Self.micros(d))) }
        if let v = s.selfTime { a.append(SpanAttribute("insight.self_ms", Self.micros(v))) }
        if let v = s.ttfb { a.append(SpanAttribute("insight.ttfb_ms", Self.micros(v))) }
        for segment in s.segments {
            a.append(SpanAttribute("insight.segment.\(segment.hop)_ms", Self.micros(segment.milliseconds)))
        }
        return SpanRecord(
            traceID: self.context.traceID, spanID: self.context.parentID, parentSpanID: self.parentSpanID,
            traceState: self.traceState, name: self.request.name, startNanos: self.startNanos,
            endNanos: self.clock.nanos(at), attributes: a,
            errorMessage: Self.isError(code: s.code, isGRPC: self.request.isGRPC) ? failure ?? s.code : nil)
    }

    /// `ms` rounded to the microsecond.
    static func micros(_ ms: Double) -> Double { (ms * 1000).rounded() / 1000 }

    /// Non-OK gRPC codes; HTTP 5xx and streams reset before their response ended.
    static func isError(code: String, isGRPC: Bool) -> Bool {
        if isGRPC { return code != "OK" }
        if let status = Int(code) { return status >= 500 }
        return true
    }
}
