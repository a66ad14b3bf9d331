internal import COpenSSL
internal import COpenSSLShims
import NIOCore

/// One OpenSSL `SSL` object over a ``TLSCiphertextBuffer``: ciphertext in, plaintext out and
/// back. It does no I/O; ``TLSHandler`` moves the bytes.
final class TLSConnection {
    let ssl: OpaquePointer
    /// What OpenSSL reads and writes through its BIO (`TLSConnection+BIO.swift`).
    var ciphertext = TLSCiphertextBuffer()
    /// The client's ALPN list when it did not offer `h2` (empty: no ALPN at all); set by the
    /// context's callbacks.
    var offeredProtocols: [String]?

    enum Result: Equatable {
        case done
        /// Needs more bytes from the peer.
        case wantRead
        /// The peer sent close_notify.
        case closed
        case failed(TLSHandshakeFailure)
    }

    init?(context: TLSContext) {
        guard let ssl = SSL_new(context.ctx) else { return nil }
        self.ssl = ssl
        guard let bio = self.makeBIO() else { return nil }
        // One BIO both ways: the SSL takes over its one reference and frees it.
        SSL_set_bio(ssl, bio, bio)
        switch context.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let name = context.serverName { _ = insight_SSL_set_tlsext_host_name(ssl, name) }
            if let identity = context.verifiedIdentity {
                if TLSContext.isIPAddress(identity) {
                    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), identity)
                } else {
                    SSL_set1_host(ssl, identity)
                }
            }
        }
        _ = insight_SSL_set_app_data(ssl, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        SSL_free(self.ssl)
    }

    static func from(_ ssl: OpaquePointer?) -> TLSConnection? {
        guard let ssl, let data = insight_SSL_get_app_data(ssl) else { return nil }
        return Unmanaged<TLSConnection>.fromOpaque(data).takeUnretainedValue()
    }

    /// Hands received ciphertext to OpenSSL (it reads it from this buffer, no copy until then).
    func receive(_ buffer: ByteBuffer) {
        self.ciphertext.receive(buffer)
    }

    func handshake() -> Result {
        ERR_clear_error()
        let rc = SSL_do_handshake(self.ssl)
        if rc == 1 { return .done }
        return self.result(rc)
    }

    /// Decrypts what it can into `buffer`; `.wantRead` when all received records are consumed.
    func read(into buffer: inout ByteBuffer, limit: Int) -> Result {
        ERR_clear_error()
        var count = 0
        let rc = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: limit) { space in
            SSL_read_ex(self.ssl, space.baseAddress, min(space.count, limit), &count)
            return count
        }
        _ = rc
        if count > 0 { return .done }
        return self.result(0)
    }

    /// Encrypts `plaintext` into the outgoing ciphertext (which grows as needed, so this never
    /// blocks): one record per 16 KiB.
    func write(_ plaintext: UnsafeRawBufferPointer) -> Result {
        guard let base = plaintext.baseAddress, plaintext.count > 0 else { return .done }
        ERR_clear_error()
        var written = 0
        if SSL_write_ex(self.ssl, base, plaintext.count, &written) != 1 { return self.result(0) }
        return .done
    }

    /// Frees OpenSSL's read and write record buffers (~17 KiB each), which it would otherwise
    /// keep for the life of the connection, and the outgoing ciphertext storage once sent; they
    /// come back on the next read or write.
    /// - Returns: false if they hold a partial record or unsent bytes (then they are kept).
    @discardableResult
    func releaseRecordBuffers() -> Bool {
        self.ciphertext.releaseOutboundStorage()
        return SSL_free_buffers(self.ssl) == 1
    }

    /// Queues close_notify.
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(self.ssl)
        ERR_clear_error()
    }

    var pendingOutput: Int { self.ciphertext.outboundBytes }

    /// The ciphertext OpenSSL produced since the last call (no copy), or nil.
    func takeOutput() -> ByteBuffer? {
        self.ciphertext.takeOutbound()
    }

    var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(self.ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    var summary: String {
        let version = SSL_get_version(self.ssl).map { String(cString: $0) } ?? "?"
        let cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(self.ssl)).map { String(cString: $0) } ?? "?"
        return "\(version) \(cipher)"
    }

    var isResumed: Bool { SSL_session_reused(self.ssl) == 1 }

    private func result(_ rc: Int32) -> Result {
        let code = SSL_get_error(self.ssl, rc)
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantRead
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        default:
            return .failed(self.classify())
        }
    }

    /// Why the handshake (or the first read after it) failed, from the error queue and the
    /// certificate verification result.
    private func classify() -> TLSHandshakeFailure {
        let first = ERR_peek_error()
        let detail = OpenSSLError.drain()
        if let offered = self.offeredProtocols {
            let list = offered.isEmpty ? "no ALPN" : "ALPN \(offered.joined(separator: ","))"
            return TLSHandshakeFailure(
                reason: .noApplicationProtocol, detail: "peer does not speak h2 (offered \(list))")
        }
        let verify = SSL_get_verify_result(self.ssl)
        if verify != X509_V_OK {
            let text = X509_verify_cert_error_string(verify).map { String(cString: $0) } ?? "\(verify)"
            let reason: TLSHandshakeFailure.Reason
            switch Int32(verify) {
            case X509_V_ERR_CERT_HAS_EXPIRED: reason = .certificateExpired
            case X509_V_ERR_CERT_NOT_YET_VALID: reason = .certificateNotYetValid
            case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH: reason = .hostnameMismatch
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
                X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
                X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_UNTRUSTED:
                reason = .certificateUntrusted
            default: reason = .certificateInvalid
            }
            return TLSHandshakeFailure(reason: reason, detail: "peer certificate: \(text)")
        }
        let code = first == 0 ? 0 : insight_ERR_GET_REASON(first)
        let reason: TLSHandshakeFailure.Reason
        if code == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED || code == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE {
            reason = .certificateRequired
        } else if code > insight_SSL_AD_REASON_OFFSET {
            reason = .alertReceived
        } else {
            switch code {
            case SSL_R_NO_APPLICATION_PROTOCOL: reason = .noApplicationProtocol
            case SSL_R_WRONG_VERSION_NUMBER, SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST,
                SSL_R_PACKET_LENGTH_TOO_LONG, SSL_R_UNKNOWN_PROTOCOL, SSL_R_RECORD_LENGTH_MISMATCH:
                reason = .notTLS
            case SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_NO_PROTOCOLS_AVAILABLE: reason = .protocolVersion
            case SSL_R_NO_SHARED_CIPHER: reason = .noSharedCipher
            case SSL_R_UNEXPECTED_EOF_WHILE_READING: reason = .truncated
            default: reason = .other
            }
        }
        return TLSHandshakeFailure(reason: reason, detail: detail)
    }
}
