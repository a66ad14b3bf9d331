import Tracing

/// The two trace context fields as a carrier for swift-distributed-tracing's propagation API.
struct TraceCarrier: Sendable {
    var traceparent: String?
    var tracestate: String?

    struct Extract: Extractor {
        func extract(key: String, from carrier: TraceCarrier) -> String? {
            switch key {
            case "traceparent": carrier.traceparent
            case "tracestate": carrier.tracestate
            default: nil
            }
        }
    }

    struct Inject: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout TraceCarrier) {
            switch key {
            case "traceparent": carrier.traceparent = value
            case "tracestate": carrier.tracestate = value
            default: break
            }
        }
    }
}
