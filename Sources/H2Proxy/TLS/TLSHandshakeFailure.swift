/// Why a TLS handshake failed: a metric label and a line for the log.
struct TLSHandshakeFailure: Error, Equatable, CustomStringConvertible {
    enum Reason: String, CaseIterable {
        case noApplicationProtocol = "no_alpn"
        case certificateExpired = "cert_expired"
        case certificateNotYetValid = "cert_not_yet_valid"
        case certificateUntrusted = "cert_untrusted"
        case hostnameMismatch = "hostname_mismatch"
        case certificateRequired = "cert_required"
        case certificateInvalid = "cert_invalid"
        /// The peer rejected us with an alert (bad certificate, unknown CA, ...).
        case alertReceived = "alert_received"
        /// The bytes are not TLS (plaintext HTTP/2 to a TLS port, or a plaintext upstream).
        case notTLS = "not_tls"
        /// A TLS ClientHello on a listener without TLS.
        case tlsOnPlaintextPort = "tls_on_plaintext_port"
        case protocolVersion = "protocol_version"
        case noSharedCipher = "no_shared_cipher"
        /// The connection closed mid-handshake.
        case truncated
        case timeout
        case other
    }

    var reason: Reason
    var detail: String

    /// How an upstream connection that failed this way explains itself (to `/readyz`).
    var description: String { "TLS handshake failed (\(self.reason.rawValue)): \(self.detail)" }
}
