/// Connection-specific fields that a proxy must not forward (RFC 9113 §8.2.2, RFC 9110 §7.6.1).
enum HopByHopHeaders {
    /// Removes `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`
    /// and any `te` other than `trailers`.
    static func strip(_ headers: inout HeaderBlock) {
        var found = false
        for i in 0..<headers.count where Self.isHopByHop(headers, i) {
            found = true
            break
        }
        guard found else { return }
        headers.removeAll { block, i in Self.isHopByHop(block, i) }
    }

    static func isHopByHop(_ h: HeaderBlock, _ i: Int) -> Bool {
        if h.nameEquals(at: i, "te") { return !h.valueEquals(at: i, "trailers") }
        return h.nameEquals(at: i, "connection") || h.nameEquals(at: i, "keep-alive")
            || h.nameEquals(at: i, "proxy-connection") || h.nameEquals(at: i, "transfer-encoding")
            || h.nameEquals(at: i, "upgrade")
    }
}
