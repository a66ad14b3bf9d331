/// One finished span, as the OTLP `Span` message carries it: everything the exporter needs,
/// copied out of the stream when it ends, so that it can cross to the exporter's task.
struct SpanRecord: Sendable, Equatable {
    /// The trace id, high half first (the W3C `trace-id`).
    var traceID: (high: UInt64, low: UInt64)
    /// This span's id (non-zero): the `parent-id` this sidecar forwards in `traceparent`.
    var spanID: UInt64
    /// The caller's span id; 0 for the root span of a new trace.
    var parentSpanID: UInt64
    /// The caller's `tracestate`, unchanged; empty when there was none or the trace is new.
    var traceState: String
    /// `<service>/<method>` for gRPC, `<METHOD> <route>` otherwise.
    var name: String
    /// Wall-clock start and end, nanoseconds since the Unix epoch (the sidecar's own
    /// monotonic measurements mapped through ``EpochClock``).
    var startNanos: UInt64
    var endNanos: UInt64
    var attributes: [SpanAttribute]
    /// `nil`: status unset (the OTLP default for a call that did not fail).
    var errorMessage: String?

    static func == (a: SpanRecord, b: SpanRecord) -> Bool {
        a.traceID == b.traceID && a.spanID == b.spanID && a.parentSpanID == b.parentSpanID
            && a.traceState == b.traceState && a.name == b.name && a.startNanos == b.startNanos
            && a.endNanos == b.endNanos && a.attributes == b.attributes && a.errorMessage == b.errorMessage
    }
}

/// One OTLP `KeyValue` attribute.
struct SpanAttribute: Sendable, Equatable {
    enum Value: Sendable, Equatable {
        case string(String)
        case int(Int64)
        case double(Double)
    }

    var key: String
    var value: Value

    init(_ key: String, _ value: String) {
        self.key = key
        self.value = .string(value)
    }

    init(_ key: String, _ value: Int) {
        self.key = key
        self.value = .int(Int64(value))
    }

    init(_ key: String, _ value: Double) {
        self.key = key
        self.value = .double(value)
    }
}
