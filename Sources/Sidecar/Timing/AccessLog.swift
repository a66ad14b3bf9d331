import Foundation
import H2Proxy

/// One JSON line per stream: hop, method, code, the timing chain and the correlation id.
///
/// Off by default. Lines are written with one `write(2)` each, so lines from several event
/// loops never interleave.
final class AccessLog: Sendable {
    let fd: Int32
    let hop: String

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
        var fields: [String: Any] = [
            "hop": self.hop, "service": o.route.service, "method": o.route.method, "http_method": s.method,
            "code": s.code, "source": o.sourceLabel, "id": o.correlationID ?? "",
        ]
        if let d = s.dur { fields["dur_ms"] = d }
        if let t = s.ttfb { fields["ttfb_ms"] = t }
        if let x = s.selfTime { fields["self_ms"] = x }
        if !s.segments.isEmpty {
            fields["segments"] = s.segments.map {
                ["hop": $0.hop, "next": $0.next, "ms": $0.milliseconds] as [String: Any]
            }
        }
        if reason != .completed { fields["end"] = "\(reason)" }
        guard var data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        data.append(0x0A)
        data.withUnsafeBytes { _ = Foundation.write(self.fd, $0.baseAddress, $0.count) }
    }
}
