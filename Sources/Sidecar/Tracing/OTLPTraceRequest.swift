import NIOCore

/// The OTLP/HTTP protobuf body of one export: an `ExportTraceServiceRequest`
/// (opentelemetry-proto `collector/trace/v1/trace_service.proto`) with one `ResourceSpans`
/// and one `ScopeSpans`, written with ``ProtoWire``.
///
/// Field numbers, from opentelemetry-proto (`trace/v1/trace.proto`, `common/v1/common.proto`,
/// `resource/v1/resource.proto`):
/// - ExportTraceServiceRequest: resource_spans 1
/// - ResourceSpans: resource 1, scope_spans 2; Resource: attributes 1
/// - ScopeSpans: scope 1, spans 2; InstrumentationScope: name 1, version 2
/// - Span: trace_id 1 (16 bytes), span_id 2 (8 bytes), trace_state 3, parent_span_id 4, name 5,
///   kind 6 (CLIENT = 3), start_time_unix_nano 7 (fixed64), end_time_unix_nano 8 (fixed64),
///   attributes 9, status 15; Status: message 2, code 3 (ERROR = 2)
/// - KeyValue: key 1, value 2; AnyValue: string_value 1, int_value 3, double_value 4 (double)
///
/// Checked byte for byte against Python's `opentelemetry-proto` in `OTLPTraceRequestTests`.
enum OTLPTraceRequest {
    /// `SPAN_KIND_CLIENT`: the sidecar calls its hop.
    static let kindClient: UInt64 = 3
    /// `STATUS_CODE_ERROR`.
    static let statusError: UInt64 = 2

    /// - Parameters:
    ///   - resource: the resource attributes (`service.name`, `insight.hop`, `insight.region`).
    ///   - scope: the instrumentation scope's name and version.
    static func encode(
        _ spans: some Collection<SpanRecord>, resource: [SpanAttribute], scope: (name: String, version: String)
    ) -> ByteBuffer {
        var scopeSpans = ByteBufferAllocator().buffer(capacity: 256 * spans.count + 64)
        message(1, into: &scopeSpans) { b in
            ProtoWire.appendStringField(1, scope.name, to: &b)
            ProtoWire.appendStringField(2, scope.version, to: &b)
        }
        for span in spans { message(2, into: &scopeSpans) { encodeSpan(span, into: &$0) } }
        var resourceSpans = ByteBufferAllocator().buffer(capacity: scopeSpans.readableBytes + 128)
        message(1, into: &resourceSpans) { b in
            for a in resource { message(1, into: &b) { encodeAttribute(a, into: &$0) } }
        }
        bytesField(2, scopeSpans, into: &resourceSpans)
        var request = ByteBufferAllocator().buffer(capacity: resourceSpans.readableBytes + 8)
        bytesField(1, resourceSpans, into: &request)
        return request
    }

    static func encodeSpan(_ s: SpanRecord, into b: inout ByteBuffer) {
        var id = ByteBufferAllocator().buffer(capacity: 16)
        id.writeInteger(s.traceID.high, endianness: .big)
        id.writeInteger(s.traceID.low, endianness: .big)
        bytesField(1, id, into: &b)
        id.clear()
        id.writeInteger(s.spanID, endianness: .big)
        bytesField(2, id, into: &b)
        ProtoWire.appendStringField(3, s.traceState, to: &b)
        if s.parentSpanID != 0 {
            id.clear()
            id.writeInteger(s.parentSpanID, endianness: .big)
            bytesField(4, id, into: &b)
        }
        ProtoWire.appendStringField(5, s.name, to: &b)
        ProtoWire.appendVarintField(6, kindClient, to: &b)
        fixed64(7, s.startNanos, into: &b)
        fixed64(8, s.endNanos, into: &b)
        for a in s.attributes { message(9, into: &b) { encodeAttribute(a, into: &$0) } }
        if let m = s.errorMessage {
            message(15, into: &b) { st in
                ProtoWire.appendStringField(2, m, to: &st)
                ProtoWire.appendVarintField(3, statusError, to: &st)
            }
        }
    }

    static func encodeAttribute(_ a: SpanAttribute, into b: inout ByteBuffer) {
        ProtoWire.appendStringField(1, a.key, to: &b)
        message(2, into: &b) { v in
            switch a.value {
            case .string(let s):
                // An empty string is still a set oneof: written even when empty.
                ProtoWire.appendVarint(UInt64(1 << 3 | 2), to: &v)
                ProtoWire.appendVarint(UInt64(s.utf8.count), to: &v)
                v.writeString(s)
            case .int(let i):
                ProtoWire.appendVarint(UInt64(3 << 3), to: &v)
                ProtoWire.appendVarint(UInt64(bitPattern: i), to: &v)
            case .double(let d):
                ProtoWire.appendVarint(UInt64(4 << 3 | 1), to: &v)
                v.writeInteger(d.bitPattern, endianness: .little)
            }
        }
    }

    /// A length-delimited field holding the message `body` writes (always written, even empty).
    private static func message(_ field: Int, into b: inout ByteBuffer, _ body: (inout ByteBuffer) -> Void) {
        var inner = ByteBufferAllocator().buffer(capacity: 64)
        body(&inner)
        bytesField(field, inner, into: &b)
    }

    private static func bytesField(_ field: Int, _ bytes: ByteBuffer, into b: inout ByteBuffer) {
        ProtoWire.appendVarint(UInt64(field << 3 | 2), to: &b)
        ProtoWire.appendVarint(UInt64(bytes.readableBytes), to: &b)
        var copy = bytes
        b.writeBuffer(&copy)
    }

    private static func fixed64(_ field: Int, _ value: UInt64, into b: inout ByteBuffer) {
        ProtoWire.appendVarint(UInt64(field << 3 | 1), to: &b)
        b.writeInteger(value, endianness: .little)
    }
}

/// What the collector's `ExportTraceServiceResponse` says: `partial_success` (field 1) with
/// `rejected_spans` (field 1, int64) and `error_message` (field 2).
struct OTLPTraceResponse: Equatable {
    var rejectedSpans = 0
    var errorMessage = ""

    init(rejectedSpans: Int = 0, errorMessage: String = "") {
        self.rejectedSpans = rejectedSpans
        self.errorMessage = errorMessage
    }

    /// An empty or undecodable body reads as full success: the status was 2xx, and the spec
    /// says a client must not retry a 2xx.
    init(decoding body: ByteBuffer) {
        try? ProtoWire.forEachField(in: body) { field, value in
            guard field == 1, case .bytes(let partial) = value else { return }
            try ProtoWire.forEachField(in: partial) { f, v in
                switch (f, v) {
                case (1, .varint(let n)): self.rejectedSpans = Int(truncatingIfNeeded: Int64(bitPattern: n))
                case (2, .bytes(let m)): self.errorMessage = String(buffer: m)
                default: break
                }
            }
        }
    }
}
