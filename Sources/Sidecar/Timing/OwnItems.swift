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
        self.withHops(epochMicros: epochMicros) { String(decoding: $0, as: UTF8.self) }
    }

    /// Calls `body` with this hop's `insight-hops` item for `epochMicros`, written into a
    /// stack buffer: the same bytes as ``hops(epochMicros:)`` without building a `String`.
    func withHops<R>(epochMicros: Int64, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        var prefix = self.hopsPrefix
        return prefix.withUTF8 { prefix in
            // The prefix, up to 20 characters of a signed 64-bit integer, the closing quote.
            withUnsafeTemporaryAllocation(byteCount: prefix.count + 21, alignment: 1) { out in
                out.copyMemory(from: UnsafeRawBufferPointer(prefix))
                var n = prefix.count
                var digits: (UInt64, Int) = (epochMicros.magnitude, 0)
                if epochMicros < 0 {
                    out[n] = UInt8(ascii: "-")
                    n += 1
                }
                // Count the digits, then write them from the last one back.
                var rest = digits.0
                repeat {
                    digits.1 += 1
                    rest /= 10
                } while rest > 0
                var i = n + digits.1 - 1
                rest = digits.0
                repeat {
                    out[i] = UInt8(ascii: "0") + UInt8(rest % 10)
                    rest /= 10
                    i -= 1
                } while rest > 0
                n += digits.1
                out[n] = UInt8(ascii: "\"")
                return body(UnsafeRawBufferPointer(rebasing: out[0..<(n + 1)]))
            }
        }
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
