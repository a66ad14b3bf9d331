import Foundation
import H2Proxy
import Metrics

/// The certificates the configuration names, when each expires, and what an operator should
/// hear about it: a warning for one expired or expiring within ``warnAhead``, and the
/// `insight_tls_certificate_expiry_timestamp_seconds` gauge.
///
/// Read at start, by `check-config` and on every reload. A chain file counts with its first
/// certificate (the leaf); a CA bundle with the certificate in it that expires first.
struct CertificateExpiry {
    struct Certificate: Equatable {
        var side: TLSEndpoint.Side
        /// The configuration field that names the file, e.g. `tls.cert`.
        var field: String
        var path: String
        var validity: CertificateValidity
    }

    /// Warn this long before `notAfter`: 14 days, in seconds.
    static let warnAhead: Int64 = 14 * 86_400
    static let metricName = "insight_tls_certificate_expiry_timestamp_seconds"
    static let metricHelp =
        "When a configured certificate expires (notAfter, Unix seconds), by side, configuration field and subject CN."

    var certificates: [Certificate] = []

    init(certificates: [Certificate]) {
        self.certificates = certificates
    }

    init(config: SidecarConfig) {
        var files: [(TLSEndpoint.Side, String, String?, isBundle: Bool)] = []
        if let tls = config.tls {
            files.append((.downstream, "tls.cert", tls.cert, false))
            files.append((.downstream, "tls.client_ca", tls.clientCA, true))
        }
        if let up = config.upstreamTLS {
            files.append((.upstream, "upstream_tls.cert", up.cert, false))
            files.append((.upstream, "upstream_tls.ca", up.ca, true))
        }
        for (side, field, path, isBundle) in files {
            guard let path else { continue }
            let all = CertificateValidity.read(pemFile: path)
            let chosen = isBundle ? all.min { $0.notAfter < $1.notAfter } : all.first
            guard let validity = chosen else { continue }
            self.certificates.append(Certificate(side: side, field: field, path: path, validity: validity))
        }
    }

    /// One line per certificate that is expired, not yet valid, or expires within ``warnAhead``
    /// of `now` (Unix seconds).
    func warnings(now: Int64 = Int64(Date().timeIntervalSince1970)) -> [String] {
        self.certificates.compactMap { c in
            let v = c.validity
            let what = "\(c.field) (\(c.path)): certificate CN=\(v.subject)"
            if v.notAfter <= now {
                return "\(what) expired on \(Self.date(v.notAfter)) (\(Self.days(now - v.notAfter)) ago): "
                    + "peers reject it; replace the file (it is reloaded without a restart)"
            }
            if v.notBefore > now {
                return "\(what) is not valid before \(Self.date(v.notBefore)): peers reject it until then"
            }
            if v.notAfter - now < Self.warnAhead {
                return "\(what) expires on \(Self.date(v.notAfter)), in \(Self.days(v.notAfter - now)): "
                    + "renew it (it is reloaded without a restart)"
            }
            return nil
        }
    }

    /// Replaces the gauge's series with these certificates' expiry times.
    func export(to registry: MetricsRegistry) {
        registry.declare(Self.metricName, help: Self.metricHelp, kind: .gauge)
        registry.remove(Self.metricName, matching: [])
        for c in self.certificates {
            registry.gauge(
                Self.metricName, help: Self.metricHelp,
                labels: [("side", c.side.rawValue), ("field", c.field), ("subject", c.validity.subject)]
            ).set(c.validity.notAfter)
        }
    }

    private static func date(_ seconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }

    private static func days(_ seconds: Int64) -> String {
        let days = seconds / 86_400
        if days >= 1 { return days == 1 ? "1 day" : "\(days) days" }
        let hours = seconds / 3600
        return hours == 1 ? "1 hour" : "\(hours) hours"
    }
}
