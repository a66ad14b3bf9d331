import Foundation
import Testing

@testable import H2Proxy

@Suite struct CertificateValidityTests {
    /// `openssl x509 -enddate`/`-startdate` of `path`, as Unix seconds.
    static func opensslDate(_ which: String, _ path: String) -> Int64? {
        let pipe = Pipe()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "x509", "-noout", "-\(which)", "-dateopt", "iso_8601", "-in", path]
        p.standardOutput = pipe
        guard (try? p.run()) != nil else { return nil }
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        // notAfter=2026-12-30 11:33:29Z
        guard let value = out.split(separator: "=", maxSplits: 1).last else { return nil }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime]
        let text = value.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "Z", with: "")
        return f.date(from: text + "Z").map { Int64($0.timeIntervalSince1970) }
            ?? ISO8601DateFormatter().date(from: text.replacingOccurrences(of: " ", with: "T") + "Z").map {
                Int64($0.timeIntervalSince1970)
            }
    }

    @Test func readsTheLeafOfAChainAsOpenSSLDoes() throws {
        let path = TestPKI.path("server.pem")
        let all = CertificateValidity.read(pemFile: path)
        #expect(all.count == 1)
        let leaf = try #require(all.first)
        #expect(leaf.subject == "localhost")
        #expect(leaf.notAfter == Self.opensslDate("enddate", path))
        #expect(leaf.notBefore == Self.opensslDate("startdate", path))
        // -days 30
        #expect(leaf.notAfter - leaf.notBefore == 30 * 86_400)
    }

    @Test func readsEveryCertificateOfABundle() throws {
        let bundle = TestPKI.directory.appendingPathComponent("bundle-\(UUID()).pem")
        let pems = try ["ca.pem", "server.pem"].map { try String(contentsOfFile: TestPKI.path($0), encoding: .utf8) }
        try pems.joined().write(to: bundle, atomically: true, encoding: .utf8)
        #expect(CertificateValidity.read(pemFile: bundle.path).map(\.subject) == ["unit-ca", "localhost"])
    }

    @Test func unreadableFileHasNoCertificate() {
        #expect(CertificateValidity.read(pemFile: "/nonexistent/cert.pem").isEmpty)
        #expect(CertificateValidity.read(pemFile: TestPKI.path("server.key")).isEmpty)
    }
}
