import RawStructuredFieldValues

/// This sidecar's own items, serialised once with the structured-fields library; per stream
/// only the numbers are filled in (with the library's decimal formatting).
struct OwnItems: Sendable {
    /// `hop;region=<region>;t="` — the request item up to its timestamp digits. Bytes, read
    /// in place: a `String` had to be copied into a `var` for `withUTF8` (a retain and a
    /// release per stream).
    let hopsPrefix: [UInt8]
    /// `hop` as a token (or string).
    let chainItem: String
    /// ``chainItem``'s bytes, read in place.
    let chainItemBytes: [UInt8]
    /// `hop;dur=`
    let timingPrefix: [UInt8]

    init(hop: String, region: String) {
        let stamp = HopStamp(hop: hop, region: region, epochMicros: 0)
        let full = TimingHeaders.serialize([stamp.item]) ?? "\(hop)"
        // The serialised item ends in `t="0"`: keep everything up to the digits.
        self.hopsPrefix = Array(full.utf8.dropLast(2))
        self.chainItem = TimingHeaders.serialize([TimingHeaders.hopItem(hop, .init())]) ?? hop
        self.chainItemBytes = Array(self.chainItem.utf8)
        self.timingPrefix = Array((self.chainItem + ";dur=").utf8)
    }

    func hops(epochMicros: Int64) -> String {
        self.withHops(epochMicros: epochMicros) { String(decoding: $0, as: UTF8.self) }
    }

    /// Calls `body` with this hop's `insight-hops` item for `epochMicros`, written into a
    /// stack buffer: the same bytes as ``hops(epochMicros:)`` without building a `String`.
    func withHops<R>(epochMicros: Int64, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        self.hopsPrefix.withUnsafeBytes { prefix in
            // The prefix, up to 20 characters of a signed 64-bit integer, the closing quote.
            withUnsafeTemporaryAllocation(byteCount: prefix.count + 21, alignment: 1) { out in
                out.copyMemory(from: prefix)
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

    /// This hop's `insight-timing` item for `e`: `hop;dur=…[;ttfb=…];self=…`, the numbers as
    /// the library writes SF Decimals (``decimal(_:)``), built in a stack buffer and made a
    /// `String` once.
    func timing(_ e: TimingEntry) -> String {
        self.withTiming(e) { String(decoding: $0, as: UTF8.self) }
    }

    /// Calls `body` with ``timing(_:)``'s bytes, written into a stack buffer.
    func withTiming<R>(_ e: TimingEntry, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        self.timingPrefix.withUnsafeBytes { prefix in
            // The prefix, then at most 3 × (";self=" and 16 characters of a decimal).
            withUnsafeTemporaryAllocation(byteCount: prefix.count + 3 * 22, alignment: 1) { out in
                out.copyMemory(from: prefix)
                var n = prefix.count
                Self.writeDecimal(e.duration, to: out, at: &n)
                if let t = e.ttfb {
                    Self.write(";ttfb=", to: out, at: &n)
                    Self.writeDecimal(t, to: out, at: &n)
                }
                Self.write(";self=", to: out, at: &n)
                Self.writeDecimal(e.selfTime, to: out, at: &n)
                return body(UnsafeRawBufferPointer(rebasing: out[0..<n]))
            }
        }
    }

    private static func write(_ text: StaticString, to out: UnsafeMutableRawBufferPointer, at n: inout Int) {
        UnsafeMutableRawBufferPointer(rebasing: out[n..<(n + text.utf8CodeUnitCount)])
            .copyMemory(from: UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        n += text.utf8CodeUnitCount
    }

    /// Milliseconds rounded to µs and clamped to 0...999,999,999.999, written as
    /// `String(PseudoDecimal(mantissa: µs, exponent: -3))` writes them: integer digits, a
    /// period, and the three fractional digits without trailing zeros but at least one
    /// (`41.234`, `40.0`, `1.5`, `0.05`).
    static func writeDecimal(_ ms: Double, to out: UnsafeMutableRawBufferPointer, at n: inout Int) {
        let micros = UInt64(max(0, min(Int64((ms * 1000).rounded()), 999_999_999_999)))
        var whole = micros / 1000
        var fraction = micros % 1000
        var fractionDigits = 3
        while fractionDigits > 1, fraction % 10 == 0 {
            fraction /= 10
            fractionDigits -= 1
        }
        var wholeDigits = 1
        var rest = whole / 10
        while rest > 0 {
            wholeDigits += 1
            rest /= 10
        }
        var i = n + wholeDigits - 1
        repeat {
            out[i] = UInt8(ascii: "0") + UInt8(whole % 10)
            whole /= 10
            i -= 1
        } while whole > 0
        n += wholeDigits
        out[n] = UInt8(ascii: ".")
        n += 1
        i = n + fractionDigits - 1
        for _ in 0..<fractionDigits {
            out[i] = UInt8(ascii: "0") + UInt8(fraction % 10)
            fraction /= 10
            i -= 1
        }
        n += fractionDigits
    }
}
