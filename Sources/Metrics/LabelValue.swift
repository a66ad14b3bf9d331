/// Label values taken from the network, kept to a length that a scrape can afford.
public enum LabelValue {
    /// `value` if it has at most `limit` characters; otherwise its first characters, `~` and a
    /// 16-digit hexadecimal FNV-1a hash of the whole value, `limit` characters in all, so that
    /// two long names that share a prefix still get two series.
    public static func truncated(_ value: Substring, to limit: Int) -> String {
        let hashLength = 17
        guard value.count > limit else { return String(value) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in value.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        let digits = String(repeating: "0", count: 16 - hex.count) + hex
        return String(value.prefix(max(0, limit - hashLength))) + "~" + digits
    }
}
