import RawStructuredFieldValues

/// This sidecar's own items, serialised once with the structured-fields library; per stream
/// only the numbers are filled in (with the library's decimal formatting).
struct OwnItems: Sendable {
    /// `hop;region=<region>;t="` — the request item up to its timestamp digits.
    let hopsPrefix: String
    /// `hop` as a token (or string).
    let chainItem: String
    /// `hop;dur=`
    let timingPrefix: String

    init(hop: String, region: String) {
        let stamp = HopStamp(hop: hop, region: region, epochMicros: 0)
        let full = TimingHeaders.serialize([stamp.item]) ?? "\(hop)"
        // The serialised item ends in `t="0"`: keep everything up to the digits.
        self.hopsPrefix = String(full.dropLast(2))
        self.chainItem = TimingHeaders.serialize([TimingHeaders.hopItem(hop, .init())]) ?? hop
        self.timingPrefix = self.chainItem + ";dur="
    }

    func hops(epochMicros: Int64) -> String {
        self.hopsPrefix + String(epochMicros) + "\""
    }

    func timing(_ e: TimingEntry) -> String {
        var s = self.timingPrefix
        s += Self.decimal(e.duration)
        if let t = e.ttfb {
            s += ";ttfb="
            s += Self.decimal(t)
        }
        s += ";self="
        s += Self.decimal(e.selfTime)
        return s
    }

    private static func decimal(_ ms: Double) -> String {
        let micros = max(0, min(Int64((ms * 1000).rounded()), 999_999_999_999))
        return String(PseudoDecimal(mantissa: Int(micros), exponent: -3))
    }
}
