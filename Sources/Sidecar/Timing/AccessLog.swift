import Foundation
import H2Proxy

/// One JSON line per ended stream, in the format documented in `Docs/operations.md` (Access log).
///
/// Off by default. Lines are written with one `write(2)` each, so lines from several event
/// loops never interleave. Fields are written in the order of ``Field``; a field without a
/// value on this stream (no response headers, no complete chain) is left out.
final class AccessLog: Sendable {
    let fd: Int32
    let hop: String

    /// The fields of a line, in the order they are written.
    ///
    /// `DocsTests` checks this list against the table in `Docs/operations.md`: a new field needs a
    /// case here, a value in ``line(_:)`` (the switch is exhaustive) and a row in the docs.
    enum Field: String, CaseIterable {
        /// When the stream ended: RFC 3339, UTC, milliseconds (`2025-01-02T03:04:05.678Z`).
        case time
        case hop
        case source
        case service
        case method
        /// The request's `:method` (`POST` for gRPC).
        case httpMethod = "http_method"
        /// The `code` metric label: gRPC status name, HTTP status, or `reset`.
        case code
        /// How the stream ended, one of ``End``.
        case end
        /// For `end` = `client_reset` / `upstream_reset`: the HTTP/2 error code name.
        case resetCode = "reset_code"
        /// The correlation id (`protocol.md`): the same value as the exemplars' `trace_id`.
        case traceID = "trace_id"
        /// This sidecar's `insight-timing` entry, milliseconds with 3 decimals.
        case durMs = "dur_ms"
        case ttfbMs = "ttfb_ms"
        case selfMs = "self_ms"
        /// The per-hop segments of a complete chain: `[{"segment", "next", "ms"}]`.
        case segments
        /// For `end` = `upstream_unavailable`: the cause this sidecar answered the client with.
        case message
    }

    /// The stable words of the `end` field, one per ``StreamEndReason``.
    enum End: String, CaseIterable {
        case completed
        case clientReset = "client_reset"
        case upstreamReset = "upstream_reset"
        case upstreamUnavailable = "upstream_unavailable"

        init(_ reason: StreamEndReason) {
            switch reason {
            case .completed: self = .completed
            case .downstreamReset: self = .clientReset
            case .upstreamReset: self = .upstreamReset
            case .upstreamUnavailable: self = .upstreamUnavailable
            }
        }
    }

    /// What one line says; built from a ``HopTimingObserver`` when its stream ends.
    struct Entry {
        /// Wall clock at the end of the stream, Unix epoch microseconds.
        var epochMicros: Int64
        var hop: String
        var source: String
        var service: String
        var method: String
        var httpMethod: String
        var code: String
        var reason: StreamEndReason
        var traceID: String
        /// Milliseconds, from this sidecar's `insight-timing` entry.
        var dur: Double?
        var ttfb: Double?
        var selfTime: Double?
        var segments: [TimingChain.Segment]
    }

    init(path: String, hop: String) throws(ConfigError) {
        self.hop = hop
        if path == "stdout" || path == "-" {
            self.fd = STDOUT_FILENO
        } else if path == "stderr" {
            self.fd = STDERR_FILENO
        } else {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw ConfigError(
                    field: "access_log", reason: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            self.fd = fd
        }
    }

    func write(_ o: HopTimingObserver, reason: StreamEndReason) {
        let s = o.summary
        let entry = Entry(
            epochMicros: s.endedUnixMicros, hop: self.hop, source: o.sourceLabel,
            service: o.route.service, method: o.route.method, httpMethod: s.method, code: s.code, reason: reason,
            traceID: o.correlationID ?? "", dur: s.dur, ttfb: s.ttfb, selfTime: s.selfTime, segments: s.segments)
        var line = Self.line(entry)
        line.append("\n")
        line.withUTF8 { _ = Foundation.write(self.fd, $0.baseAddress, $0.count) }
    }

    /// The JSON object for `entry`, without the newline.
    static func line(_ e: Entry) -> String {
        var out = "{"
        var first = true
        func key(_ f: Field) {
            out += first ? "\"\(f.rawValue)\":" : ",\"\(f.rawValue)\":"
            first = false
        }
        func string(_ f: Field, _ v: String) {
            key(f)
            appendJSONString(v, to: &out)
        }
        for field in Field.allCases {
            switch field {
            case .time: string(field, rfc3339(epochMicros: e.epochMicros))
            case .hop: string(field, e.hop)
            case .source: string(field, e.source)
            case .service: string(field, e.service)
            case .method: string(field, e.method)
            case .httpMethod: string(field, e.httpMethod)
            case .code: string(field, e.code)
            case .end: string(field, End(e.reason).rawValue)
            case .resetCode:
                switch e.reason {
                case .downstreamReset(let c), .upstreamReset(let c): string(field, h2ErrorName(c))
                default: break
                }
            case .traceID: string(field, e.traceID)
            case .durMs:
                if let v = e.dur {
                    key(field)
                    out += milliseconds(v)
                }
            case .ttfbMs:
                if let v = e.ttfb {
                    key(field)
                    out += milliseconds(v)
                }
            case .selfMs:
                if let v = e.selfTime {
                    key(field)
                    out += milliseconds(v)
                }
            case .segments:
                guard !e.segments.isEmpty else { break }
                key(field)
                out += "["
                for (i, s) in e.segments.enumerated() {
                    out += i == 0 ? "{\"segment\":" : ",{\"segment\":"
                    appendJSONString(s.hop, to: &out)
                    out += ",\"next\":"
                    appendJSONString(s.next, to: &out)
                    out += ",\"ms\":\(milliseconds(s.milliseconds))}"
                }
                out += "]"
            case .message:
                if case .upstreamUnavailable(let cause) = e.reason { string(field, cause) }
            }
        }
        out += "}"
        return out
    }

    /// `2025-01-02T03:04:05.678Z`: RFC 3339 in UTC with milliseconds.
    static func rfc3339(epochMicros: Int64) -> String {
        var seconds = time_t(epochMicros / 1_000_000)
        let millis = Int((epochMicros % 1_000_000) / 1000)
        var t = tm()
        gmtime_r(&seconds, &t)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T"
            + "\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }

    /// Milliseconds as a JSON number with exactly three decimals (microseconds), like `insight-timing`.
    static func milliseconds(_ ms: Double) -> String {
        guard ms.isFinite else { return "0.000" }
        let micros = Int64((ms * 1000).rounded())
        let sign = micros < 0 ? "-" : ""
        let m = micros.magnitude
        let frac = String(m % 1000)
        return "\(sign)\(m / 1000).\(String(repeating: "0", count: 3 - frac.count))\(frac)"
    }

    /// The RFC 9113 §7 name of an HTTP/2 error code (`CANCEL`), or `0x…` for an unknown one.
    static func h2ErrorName(_ code: UInt32) -> String {
        let names = [
            "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
            "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
        ]
        return code < names.count ? names[Int(code)] : "0x" + String(code, radix: 16)
    }

    private static func appendJSONString(_ s: String, to out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}
