import H2Proxy

/// The id that ties one call's measurements together across sidecars.
enum CorrelationID {
    /// The W3C `traceparent` trace-id if the request has a valid one, else `insight-id`.
    static func find(in headers: HeaderBlock) -> String? {
        if let tp = headers.first("traceparent"), let id = self.traceID(fromTraceparent: tp) { return id }
        if let id = headers.first("insight-id"), self.isHexID(id) { return id }
        return nil
    }

    /// `version-traceid-parentid-flags`, trace-id 32 lower-case hex digits and not all zero.
    static func traceID(fromTraceparent value: String) -> String? {
        let parts = value.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].count == 2, parts[0] != "ff", parts[1].count == 32, parts[2].count == 16
        else { return nil }
        let id = String(parts[1])
        guard self.isHexID(id), id != String(repeating: "0", count: 32) else { return nil }
        return id
    }

    static func isHexID(_ s: String) -> Bool {
        s.utf8.count == 32 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}
