/// How a call ended, as the `code` label says it: a gRPC status name (`OK`, `UNAVAILABLE`, …)
/// for gRPC, the HTTP status (`200`, `502`, …) or `reset` for plain HTTP.
///
/// Kept as a number while the stream runs: the observer sets it up to three times per call
/// and compares it with `OK` and `CANCELLED`, and a `String` field cost a release each time it
/// was replaced and again when the observer went away. Its text (``name``) is made when a
/// series, an access log line or a sample needs it.
struct CallCode: Equatable, Hashable {
    /// 0–16: a gRPC status code; 1000–1999: HTTP status 000–999 (+ 1000, so that `000`–`016`
    /// are not gRPC codes); -1: a plain HTTP stream reset.
    private let raw: Int16

    private init(raw: Int16) { self.raw = raw }

    static let ok = CallCode(raw: 0)
    static let cancelled = CallCode(raw: 1)
    static let unknown = CallCode(raw: 2)
    static let deadlineExceeded = CallCode(raw: 4)
    static let resourceExhausted = CallCode(raw: 8)
    static let permissionDenied = CallCode(raw: 7)
    static let `internal` = CallCode(raw: 13)
    static let unavailable = CallCode(raw: 14)
    /// A plain HTTP stream reset before its response ended.
    static let reset = CallCode(raw: -1)

    /// The gRPC status `value` (`grpc-status`); `UNKNOWN` when missing or out of range.
    static func grpc(_ value: Int?) -> CallCode {
        guard let n = value, n >= 0, n < GRPCStatusName.names.count else { return .unknown }
        return CallCode(raw: Int16(n))
    }

    /// The HTTP status `status` (`:status`, three digits as nghttp2 checks, `000` included);
    /// `nil` for anything else, which then keeps the code it had.
    static func http(_ status: Int?) -> CallCode? {
        guard let s = status, s >= 0, s <= 999 else { return nil }
        return CallCode(raw: Int16(1000 + s))
    }

    /// What a gRPC client reports for a stream reset with HTTP/2 error `code` (gRPC's mapping).
    static func grpcForReset(_ code: UInt32) -> CallCode {
        switch code {
        case 0x0, 0x1, 0x2, 0x3, 0x4, 0x6, 0x9, 0xa: .internal
        case 0x7: .unavailable
        case 0x8: .cancelled
        case 0xb: .resourceExhausted
        case 0xc: .permissionDenied
        default: .unknown
        }
    }

    /// The label text: gRPC names, `200` and the two statuses the proxy answers itself are
    /// static strings; other HTTP statuses are written as their three digits (`099` for 99, as
    /// the `:status` field said it; a small string, no allocation).
    var name: String {
        switch self.raw {
        case -1: "reset"
        case 0..<Int16(GRPCStatusName.names.count): GRPCStatusName.names[Int(self.raw)]
        case 1200: "200"
        case 1502: "502"
        case 1503: "503"
        case 1100...1999: String(self.raw - 1000)
        case 1000..<1100: (self.raw < 1010 ? "00" : "0") + String(self.raw - 1000)
        default: "UNKNOWN"
        }
    }
}
