import H2Proxy

/// A W3C Trace Context `traceparent` value (https://www.w3.org/TR/trace-context/#traceparent-header):
/// `version-traceid-parentid-flags`, parsed straight from header bytes.
///
/// Parsing builds no `String`: only a sampled call, which gets a span, pays for text.
struct TraceParent: Sendable, Equatable {
    /// The 16-byte trace id, high half first.
    var traceID: (high: UInt64, low: UInt64)
    /// The 8-byte id of the caller's span (the `parent-id` field).
    var parentID: UInt64
    /// `trace-flags`; bit 0 is `sampled`.
    var flags: UInt8

    static func == (a: TraceParent, b: TraceParent) -> Bool {
        // Field by field: `==` on the tuple goes through the runtime's generic tuple metadata
        // on every call (3 % of a loop's CPU at sample_ratio 0.01).
        a.traceID.high == b.traceID.high && a.traceID.low == b.traceID.low && a.parentID == b.parentID
            && a.flags == b.flags
    }

    var sampled: Bool { self.flags & 1 != 0 }

    /// The length of a version `00` value, and the least any version may have.
    static let length = 55

    init(traceID: (high: UInt64, low: UInt64), parentID: UInt64, flags: UInt8) {
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    /// Parses a header value; `nil` for anything the W3C rules call invalid: a length other
    /// than 55 for version `00`, upper-case or non-hex digits, version `ff`, an all-zero trace
    /// or parent id, or a later version whose 56th character is not `-`.
    init?<Bytes: Collection<UInt8>>(_ bytes: Bytes) where Bytes.Index == Int {
        let count = bytes.count
        guard count >= Self.length else { return nil }
        let s = bytes.startIndex
        @inline(__always) func hex(_ from: Int, _ digits: Int) -> UInt64? {
            var v: UInt64 = 0
            for i in from..<(from + digits) {
                let c = bytes[s + i]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c &- UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c &- UInt8(ascii: "a") &+ 10
                default: return nil
                }
                v = v << 4 | UInt64(d)
            }
            return v
        }
        let dash = UInt8(ascii: "-")
        guard bytes[s + 2] == dash, bytes[s + 35] == dash, bytes[s + 52] == dash else { return nil }
        guard let version = hex(0, 2), version != 0xff else { return nil }
        if version == 0 {
            guard count == Self.length else { return nil }
        } else if count > Self.length {
            // A later version may add fields, each after a `-`.
            guard bytes[s + Self.length] == dash else { return nil }
        }
        guard let high = hex(3, 16), let low = hex(19, 16), high | low != 0 else { return nil }
        guard let parent = hex(36, 16), parent != 0 else { return nil }
        guard let flags = hex(53, 2) else { return nil }
        self.init(traceID: (high, low), parentID: parent, flags: UInt8(flags))
    }

    /// `00-<trace-id>-<parent-id>-<flags>`: always version `00`, the version this sidecar speaks
    /// (a later version's extra fields are dropped, as the W3C rules ask of a vendor that
    /// forwards a version it only partly knows).
    var formatted: String {
        String(unsafeUninitializedCapacity: Self.length) { buffer in
            self.write(into: buffer)
            return Self.length
        }
    }

    /// Calls `body` with the `traceparent` value's bytes, in a buffer on the stack (no `String`).
    func withFormattedBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Self.length) { buffer in
            self.write(into: buffer)
            return try body(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Writes the `Self.length` bytes of the `traceparent` value to the start of `buffer`.
    private func write(into buffer: UnsafeMutableBufferPointer<UInt8>) {
        buffer[0] = UInt8(ascii: "0")
        buffer[1] = UInt8(ascii: "0")
        buffer[2] = UInt8(ascii: "-")
        Self.writeHex(self.traceID.high, digits: 16, into: buffer, at: 3)
        Self.writeHex(self.traceID.low, digits: 16, into: buffer, at: 19)
        buffer[35] = UInt8(ascii: "-")
        Self.writeHex(self.parentID, digits: 16, into: buffer, at: 36)
        buffer[52] = UInt8(ascii: "-")
        Self.writeHex(UInt64(self.flags), digits: 2, into: buffer, at: 53)
    }

    /// The trace id as 32 lower-case hex digits (what `insight-id` and exemplars carry).
    var traceIDHex: String {
        String(unsafeUninitializedCapacity: 32) { buffer in
            Self.writeHex(self.traceID.high, digits: 16, into: buffer, at: 0)
            Self.writeHex(self.traceID.low, digits: 16, into: buffer, at: 16)
            return 32
        }
    }

    /// The parent id as 16 lower-case hex digits.
    var parentIDHex: String {
        String(unsafeUninitializedCapacity: 16) { buffer in
            Self.writeHex(self.parentID, digits: 16, into: buffer, at: 0)
            return 16
        }
    }

    private static func writeHex(_ v: UInt64, digits: Int, into buffer: UnsafeMutableBufferPointer<UInt8>, at: Int) {
        let alphabet: StaticString = "0123456789abcdef"
        for i in 0..<digits {
            buffer[at + i] = alphabet.utf8Start[Int((v >> UInt64(4 * (digits - 1 - i))) & 0xf)]
        }
    }
}

extension TraceParent {
    /// The first `traceparent` of `headers`, parsed in place.
    /// - Returns: `.absent` when there is none, `.invalid` when there is one the rules reject.
    static func find(in headers: HeaderBlock) -> Found {
        guard let i = headers.firstIndex(of: "traceparent") else { return .absent }
        // Two `traceparent` fields: which one the caller meant is unknown, so neither is
        // continued (the W3C test suite's `test_traceparent_duplicated`).
        for j in (i + 1)..<headers.count where headers.nameEquals(at: j, "traceparent") { return .invalid }
        let view = headers.value(at: i)
        let parsed = view.withContiguousStorageIfAvailable { TraceParent($0) } ?? TraceParent(Array(view))
        return parsed.map(Found.valid) ?? .invalid
    }

    enum Found: Equatable {
        case absent
        case invalid
        case valid(TraceParent)
    }
}
