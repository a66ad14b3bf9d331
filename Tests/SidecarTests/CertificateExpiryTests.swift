import H2Proxy
import Metrics
import Testing

@testable import Sidecar

@Suite struct CertificateExpiryTests {
    static let now: Int64 = 1_800_000_000
    static let day: Int64 = 86_400

    static func expiry(notBefore: Int64 = now - 30 * day, notAfter: Int64) -> CertificateExpiry {
        CertificateExpiry(certificates: [
            .init(
                side: .downstream, field: "tls.cert", path: "/etc/insight/tls.pem",
                validity: CertificateValidity(subject: "gw.example", notBefore: notBefore, notAfter: notAfter))
        ])
    }

    @Test func validForLongerThan14DaysSaysNothing() {
        #expect(Self.expiry(notAfter: Self.now + 15 * Self.day).warnings(now: Self.now).isEmpty)
    }

    @Test func expiringWithin14DaysWarns() {
        let w = Self.expiry(notAfter: Self.now + 13 * Self.day).warnings(now: Self.now)
        #expect(w.count == 1)
        #expect(w.first?.contains("tls.cert (/etc/insight/tls.pem): certificate CN=gw.example expires on") == true)
        #expect(w.first?.contains("in 13 days") == true)
        let hours = Self.expiry(notAfter: Self.now + 5 * 3600).warnings(now: Self.now)
        #expect(hours.first?.contains("in 5 hours") == true)
    }

    @Test func expiredWarns() {
        let w = Self.expiry(notAfter: Self.now - 2 * Self.day).warnings(now: Self.now)
        #expect(w.first?.contains("expired on 2027-01-13T08:00:00Z (2 days ago)") == true)
        #expect(Self.expiry(notAfter: Self.now).warnings(now: Self.now).first?.contains("expired") == true)
    }

    @Test func notYetValidWarns() {
        let w = Self.expiry(notBefore: Self.now + Self.day, notAfter: Self.now + 90 * Self.day).warnings(now: Self.now)
        #expect(w.first?.contains("is not valid before") == true)
    }

    @Test func gaugeHasOneSeriesPerCertificateAndReloadReplacesIt() {
        let registry = MetricsRegistry()
        Self.expiry(notAfter: Self.now).export(to: registry)
        #expect(
            registry.render().contains(
                #"insight_tls_certificate_expiry_timestamp_seconds{side="downstream",field="tls.cert",subject="gw.example"} 1800000000"#
            ))
        CertificateExpiry(certificates: [
            .init(
                side: .downstream, field: "tls.cert", path: "/p",
                validity: CertificateValidity(subject: "new.example", notBefore: 0, notAfter: 1_900_000_000))
        ]).export(to: registry)
        let series = registry.render().split(separator: "\n").filter {
            $0.hasPrefix(CertificateExpiry.metricName + "{")
        }
        #expect(series.count == 1)
        #expect(registry.render().contains(#"subject="new.example"} 1900000000"#))
    }
}
