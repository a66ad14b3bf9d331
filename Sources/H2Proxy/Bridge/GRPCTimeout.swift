/// The `grpc-timeout` request header: how long the client gives the call.
///
/// Grammar (gRPC over HTTP/2, "Requests"): 1 to 8 ASCII digits, then one unit:
/// `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds.
public enum GRPCTimeout {
    /// The timeout in nanoseconds, or nil when `value` does not follow the grammar.
    ///
    /// `@inlinable`, so that a caller in another module gets it specialised for its byte
    /// collection: the timing observer's generic call over a `ByteBufferView` made four
    /// allocations per request with a timeout.
    @inlinable
    public static func nanoseconds<Bytes: BidirectionalCollection>(_ value: Bytes) -> Int64?
    where Bytes.Element == UInt8 {
        guard let unit = value.last, value.count >= 2, value.count <= 9 else { return nil }
        var amount: Int64 = 0
        for byte in value.dropLast() {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            amount = amount * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        let nanosPerUnit: Int64
        switch unit {
        case UInt8(ascii: "H"): nanosPerUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): nanosPerUnit = 60_000_000_000
        case UInt8(ascii: "S"): nanosPerUnit = 1_000_000_000
        case UInt8(ascii: "m"): nanosPerUnit = 1_000_000
        case UInt8(ascii: "u"): nanosPerUnit = 1000
        case UInt8(ascii: "n"): nanosPerUnit = 1
        default: return nil
        }
        // 99,999,999 hours overflows Int64 nanoseconds: such a call has no practical deadline.
        let (product, overflow) = amount.multipliedReportingOverflow(by: nanosPerUnit)
        return overflow ? Int64.max : product
    }

    /// Whether a call that ran `elapsed` nanoseconds (since the sidecar received its request
    /// headers) and was cut short ended at its timeout of `timeout` nanoseconds.
    ///
    /// Allows 10 % of the timeout early, at least 20 ms and at most 100 ms: clients round the
    /// header up when they encode it, and count from before the request reached this sidecar,
    /// which under load is tens of milliseconds earlier (5 % misread 1 call in 30 on a busy
    /// 2-core machine). The cap keeps a deliberate cancel of a long call what it is.
    ///
    /// Slack is `min(max(20 ms, timeout / 10), 100 ms)`, never more than the timeout.
    public static func reached(elapsed: Int64, timeout: Int64) -> Bool {
        let slack = min(max(20_000_000, timeout / 10), 100_000_000)
        return elapsed >= timeout - min(slack, timeout)
    }

    /// The header value for a timeout of `nanoseconds`: milliseconds (at least 1) when they fit
    /// the grammar's 8 digits, else the finest of seconds, minutes and hours that fits, rounded
    /// up (a deadline is never sent shorter than it is); 99,999,999 hours at most.
    public static func encode(nanoseconds: Int64) -> String {
        let units: [(divisor: Int64, unit: String)] = [
            (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M"), (3_600_000_000_000, "H"),
        ]
        for (divisor, unit) in units {
            let amount = max(1, nanoseconds / divisor + (nanoseconds % divisor > 0 && divisor > 1_000_000 ? 1 : 0))
            if amount <= 99_999_999 { return "\(amount)\(unit)" }
        }
        return "99999999H"
    }

    /// Whether `value` follows the grammar (see ``nanoseconds(_:)``).
    @inlinable
    public static func isValid<Bytes: BidirectionalCollection>(_ value: Bytes) -> Bool where Bytes.Element == UInt8 {
        Self.nanoseconds(value) != nil
    }
}
