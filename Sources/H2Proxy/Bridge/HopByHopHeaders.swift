/// Connection-specific fields that a proxy must not forward (RFC 9113 §8.2.2, RFC 9110 §7.6.1).
enum HopByHopHeaders {
    /// Removes `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`
    /// and any `te` other than `trailers`. `te: trailers` in any letter case is kept, written
    /// `trailers` (the keyword is case-insensitive; a grpc-core upstream resets a stream
    /// without it).
    static func strip(_ headers: inout HeaderBlock) {
        var found = false
        var teToNormalise = false
        for i in 0..<headers.count {
            if Self.isHopByHop(headers, i) {
                found = true
            } else if headers.nameEquals(at: i, "te") && !headers.valueEquals(at: i, "trailers") {
                teToNormalise = true
            }
        }
        if found { headers.removeAll { block, i in Self.isHopByHop(block, i) } }
        if teToNormalise { headers.replace(name: "te", value: "trailers") }
    }

    static func isHopByHop(_ h: HeaderBlock, _ i: Int) -> Bool {
        if h.nameEquals(at: i, "te") { return !h.valueEqualsIgnoringCase(at: i, "trailers") }
        return h.nameEquals(at: i, "connection") || h.nameEquals(at: i, "keep-alive")
            || h.nameEquals(at: i, "proxy-connection") || h.nameEquals(at: i, "transfer-encoding")
            || h.nameEquals(at: i, "upgrade")
    }
}
