import H2Proxy
import Metrics

/// The id that ties one call's measurements together across sidecars.
enum CorrelationID {
    /// The W3C `traceparent` trace-id if the request has a valid one, else `insight-id`.
    static func find(in headers: HeaderBlock) -> String? {
        self.findTraceID(in: headers)?.hex
    }

    /// ``find(in:)`` read straight from the header bytes: no `String` is built. Two
    /// `traceparent` fields are invalid, as for tracing (which one the caller meant is unknown).
    static func findTraceID(in headers: HeaderBlock) -> TraceID? {
        if let i = headers.firstIndex(of: "traceparent"), !Self.hasAnother("traceparent", after: i, in: headers),
            let id = headers.value(at: i).withContiguousStorageIfAvailable(Self.traceID(fromTraceparent:)) ?? nil
        {
            return id
        }
        if let i = headers.firstIndex(of: "insight-id"),
            let id = headers.value(at: i).withContiguousStorageIfAvailable({ TraceID(hex: $0) }) ?? nil
        {
            return id
        }
        return nil
    }

    /// `version-traceid-parentid-flags`, trace-id 32 lower-case hex digits and not all zero.
    static func traceID(fromTraceparent value: String) -> String? {
        var value = value
        return value.withUTF8 { Self.traceID(fromTraceparent: $0) }?.hex
    }

    /// `version-traceid-parentid-flags`: a two-character version other than `ff`, a trace-id
    /// of 32 lower-case hex digits not all zero, a 16-character parent id, then flags (and
    /// whatever later versions add).
    static func traceID(fromTraceparent value: UnsafeBufferPointer<UInt8>) -> TraceID? {
        let dash = UInt8(ascii: "-")
        guard value.count >= 53, value[2] == dash, value[35] == dash, value[52] == dash,
            value[0] != dash, value[1] != dash, !(value[0] == UInt8(ascii: "f") && value[1] == UInt8(ascii: "f")),
            !value[36..<52].contains(dash),
            let id = TraceID(hex: value[3..<35]), id != TraceID(high: 0, low: 0)
        else { return nil }
        return id
    }

    static func isHexID(_ s: String) -> Bool {
        s.utf8.count == 32 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// Leaves a request that carries `insight-id` with exactly one, equal to `id` (the
    /// correlation id): a different value is rewritten, later fields are removed. A request
    /// without one is left alone. Compared in place; a `String` is built only to rewrite.
    static func align(_ id: TraceID, in headers: inout HeaderBlock) {
        guard let i = headers.firstIndex(of: "insight-id") else { return }
        let same = withUnsafeTemporaryAllocation(byteCount: 32, alignment: 1) { hex in
            id.writeHex(to: hex)
            return headers.value(at: i).elementsEqual(UnsafeRawBufferPointer(hex))
        }
        if !same || Self.hasAnother("insight-id", after: i, in: headers) {
            headers.replace(name: "insight-id", value: id.hex)
        }
    }

    /// Whether a field named `name` follows index `i`.
    private static func hasAnother(_ name: StaticString, after i: Int, in headers: HeaderBlock) -> Bool {
        for j in (i + 1)..<headers.count where headers.nameEquals(at: j, name) { return true }
        return false
    }

    /// Sets `insight-id` to `id`: appended from a stack buffer when the request has none
    /// (no `String` is built), replaced when it has an invalid one.
    static func write(_ id: TraceID, to headers: inout HeaderBlock) {
        guard headers.firstIndex(of: "insight-id") == nil else {
            headers.replace(name: "insight-id", value: id.hex)
            return
        }
        let name: StaticString = "insight-id"
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 1) { value in
            id.writeHex(to: value)
            headers.append(
                name: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount),
                value: UnsafeRawBufferPointer(value), flags: TimingHeaders.neverIndexed)
        }
    }
}
