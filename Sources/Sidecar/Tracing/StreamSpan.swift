import H2Proxy
import NIOCore
import Tracing

/// The span of one forwarded stream of a sampled trace: started when the request headers
/// are forwarded, ended with the stream, with the hop's measurements as attributes.
final class StreamSpan {
    let span: any Span
    let clock: EpochClock
    let request: Request
    unowned let tracing: LoopTracing

    init(span: any Span, clock: EpochClock, request: Request, tracing: LoopTracing) {
        self.span = span
        self.clock = clock
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
        let s = o.summary
        let t = self.tracing
        var a = SpanAttributes()
        a["server.address"] = t.upstream.host
        a["server.port"] = t.upstream.port
        if self.request.isGRPC {
            a["rpc.system"] = "grpc"
            a["rpc.service"] = self.request.service
            a["rpc.method"] = self.request.method
            if let n = GRPCStatusName.names.firstIndex(of: s.code) { a["rpc.grpc.status_code"] = n }
        } else {
            a["http.request.method"] = self.request.httpMethod
            // Not `http.route`: that is the server's matched route template, which a proxy does
            // not know; the first path segment (the metrics' route label) goes in insight.route.
            a["insight.route"] = self.request.method
            if let status = Int(s.code) { a["http.response.status_code"] = status }
        }
        a["insight.hop"] = t.hop
        a["insight.region"] = t.region
        a["insight.source"] = o.sourceLabel
        a["insight.code"] = s.code
        // Microseconds, as `insight-timing` carries them (no binary-fraction noise).
        if let d = s.dur { a["insight.dur_ms"] = Self.micros(d) }
        if let v = s.selfTime { a["insight.self_ms"] = Self.micros(v) }
        if let v = s.ttfb { a["insight.ttfb_ms"] = Self.micros(v) }
        for segment in s.segments { a["insight.segment.\(segment.hop)_ms"] = Self.micros(segment.milliseconds) }
        self.span.attributes = a
        if Self.isError(code: s.code, isGRPC: self.request.isGRPC) {
            self.span.setStatus(SpanStatus(code: .error, message: o.failureMessage ?? s.code))
        }
        self.span.end(at: self.clock.instant(at))
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
