/// A 128-bit trace id (W3C `traceparent` trace-id, or Insight's `insight-id`): the value of an
/// exemplar's `trace_id` label.
///
/// Kept as two integers so that a stream carries its id without a `String`; the 32 hex digits
/// are written only where they are read (a header, a kept exemplar, a log line).
public struct TraceID: Hashable, Sendable {
    /// The first 16 hex digits.
    public var high: UInt64
    /// The last 16 hex digits.
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses exactly 32 lower-case hex digits; `nil` for anything else. Inlinable, so that
    /// callers in other modules get it specialised for their collection (unspecialised, it
    /// looked up generic metadata on every call).
    @inlinable
    public init?<Bytes: Collection>(hex bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == 32 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (i, c) in bytes.enumerated() {
            let digit: UInt64
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(c &- UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt64(c &- UInt8(ascii: "a") &+ 10)
            default: return nil
            }
            if i < 16 { high = high << 4 | digit } else { low = low << 4 | digit }
        }
        self.init(high: high, low: low)
    }

    /// Writes the 32 lower-case hex digits to `out` (at least 32 bytes).
    @inlinable
    public func writeHex(to out: UnsafeMutableRawBufferPointer) {
        let digits: StaticString = "0123456789abcdef"
        for i in 0..<16 {
            let shift = UInt64(60 - 4 * i)
            out[i] = digits.utf8Start[Int((self.high >> shift) & 0xf)]
            out[16 + i] = digits.utf8Start[Int((self.low >> shift) & 0xf)]
        }
    }

    /// The 32 lower-case hex digits.
    public var hex: String {
        String(unsafeUninitializedCapacity: 32) { buffer in
            self.writeHex(to: UnsafeMutableRawBufferPointer(buffer))
            return 32
        }
    }
}
