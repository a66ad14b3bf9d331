internal import COpenSSL
import Foundation

/// When a certificate may be used: its subject and validity period, read from a PEM file.
public struct CertificateValidity: Sendable, Equatable {
    /// The subject's common name, or the whole subject (one line) if it has none.
    public var subject: String
    /// `notBefore`, in seconds since the Unix epoch (UTC).
    public var notBefore: Int64
    /// `notAfter`, in seconds since the Unix epoch (UTC).
    public var notAfter: Int64

    public init(subject: String, notBefore: Int64, notAfter: Int64) {
        self.subject = subject
        self.notBefore = notBefore
        self.notAfter = notAfter
    }

    /// Every certificate in the PEM file at `path`, in file order (a chain starts with its
    /// leaf); at most `limit`. Empty if the file cannot be read or holds no certificate.
    public static func read(pemFile path: String, limit: Int = 1000) -> [CertificateValidity] {
        guard let bio = BIO_new_file(path, "r") else {
            ERR_clear_error()
            return []
        }
        defer { BIO_free(bio) }
        var out: [CertificateValidity] = []
        while out.count < limit, let x509 = PEM_read_bio_X509(bio, nil, nil, nil) {
            defer { X509_free(x509) }
            guard let notBefore = Self.seconds(X509_get0_notBefore(x509)),
                let notAfter = Self.seconds(X509_get0_notAfter(x509))
            else { continue }
            out.append(CertificateValidity(subject: Self.subject(x509), notBefore: notBefore, notAfter: notAfter))
        }
        // The read that found no further certificate leaves "no start line" in the queue.
        ERR_clear_error()
        return out
    }

    private static func seconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
        guard let time else { return nil }
        var tm = tm()
        guard ASN1_TIME_to_tm(time, &tm) == 1 else { return nil }
        return Int64(timegm(&tm))
    }

    private static func subject(_ x509: OpaquePointer) -> String {
        guard let name = X509_get_subject_name(x509) else { return "" }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer in
            if X509_NAME_get_text_by_NID(name, NID_commonName, buffer.baseAddress, 256) > 0 {
                return String(cString: buffer.baseAddress!)
            }
            guard let line = X509_NAME_oneline(name, buffer.baseAddress, 256) else { return "" }
            return String(cString: line)
        }
    }
}
