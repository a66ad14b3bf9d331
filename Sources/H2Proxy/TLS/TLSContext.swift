internal import COpenSSL
internal import COpenSSLShims
import NIOCore

/// One configured OpenSSL `SSL_CTX`: certificates, trust roots, ALPN, versions.
///
/// A context never changes after it is made; reloading certificates makes a new context for new
/// connections while open connections keep theirs (each `SSL` holds a reference on its `SSL_CTX`).
public final class TLSContext: @unchecked Sendable {
    public enum Role: Sendable { case server, client }

    public let role: Role
    let ctx: OpaquePointer
    /// The name sent as SNI (client role).
    let serverName: String?
    /// The DNS name or IP address the upstream certificate must match (client role); nil when
    /// verification is off.
    let verifiedIdentity: String?

    private init(role: Role, ctx: OpaquePointer, serverName: String?, verifiedIdentity: String?) {
        self.role = role
        self.ctx = ctx
        self.serverName = serverName
        self.verifiedIdentity = verifiedIdentity
    }

    deinit {
        SSL_CTX_free(self.ctx)
    }

    /// A context for accepting clients: ALPN must select `h2`, TLS 1.2 or newer, session cache and
    /// tickets on, and optionally client certificates verified against `clientCA`.
    public static func server(
        certificateChain: String, privateKey: String, clientCA: String? = nil,
        requireClientCertificate: Bool = false
    ) throws(TLSConfigurationError) -> TLSContext {
        let ctx = try Self.makeContext(method: TLS_server_method())
        let context = TLSContext(role: .server, ctx: ctx, serverName: nil, verifiedIdentity: nil)
        try context.useCertificate(chain: certificateChain, key: privateKey)
        if let clientCA {
            ERR_clear_error()
            guard SSL_CTX_load_verify_locations(ctx, clientCA, nil) == 1 else {
                throw TLSConfigurationError(.clientCA, path: clientCA, reason: OpenSSLError.drain())
            }
            guard let names = SSL_load_client_CA_file(clientCA) else {
                throw TLSConfigurationError(.clientCA, path: clientCA, reason: OpenSSLError.drain())
            }
            SSL_CTX_set_client_CA_list(ctx, names)
            var mode = SSL_VERIFY_PEER
            if requireClientCertificate { mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT }
            SSL_CTX_set_verify(ctx, mode, nil)
        } else if requireClientCertificate {
            throw TLSConfigurationError(
                .clientCA, path: nil, reason: "client certificates required but no CA bundle given")
        }
        let id: [UInt8] = Array("insight".utf8)
        SSL_CTX_set_session_id_context(ctx, id, UInt32(id.count))
        _ = insight_SSL_CTX_set_session_cache_mode(ctx, insight_SSL_SESS_CACHE_SERVER)
        _ = insight_SSL_CTX_sess_set_cache_size(ctx, 20_000)
        SSL_CTX_set_client_hello_cb(ctx, tlsClientHelloCallback, nil)
        SSL_CTX_set_alpn_select_cb(ctx, tlsALPNSelectCallback, nil)
        return context
    }

    /// A context for connecting upstream: `h2` by ALPN, SNI, the peer verified against `trustRoots`
    /// (or the system store) and `verifyHost`, and an optional client certificate.
    ///
    /// - Parameters:
    ///   - serverName: sent as SNI unless it is an IP address.
    ///   - verifyHost: DNS name or IP address the certificate must be issued for.
    public static func client(
        trustRoots: String? = nil, certificateChain: String? = nil, privateKey: String? = nil,
        serverName: String?, verifyHost: String?, skipVerification: Bool = false
    ) throws(TLSConfigurationError) -> TLSContext {
        let ctx = try Self.makeContext(method: TLS_client_method())
        let context = TLSContext(
            role: .client, ctx: ctx, serverName: serverName.flatMap { Self.isIPAddress($0) ? nil : $0 },
            verifiedIdentity: skipVerification ? nil : verifyHost)
        if let certificateChain, let privateKey {
            try context.useCertificate(chain: certificateChain, key: privateKey)
        } else if certificateChain != nil || privateKey != nil {
            throw TLSConfigurationError(
                certificateChain == nil ? .certificateChain : .privateKey, path: nil,
                reason: "a client certificate needs both the certificate chain and the key")
        }
        ERR_clear_error()
        if let trustRoots {
            guard SSL_CTX_load_verify_locations(ctx, trustRoots, nil) == 1 else {
                throw TLSConfigurationError(.trustRoots, path: trustRoots, reason: OpenSSLError.drain())
            }
        } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
            throw TLSConfigurationError(.trustRoots, path: nil, reason: "system trust store: \(OpenSSLError.drain())")
        }
        SSL_CTX_set_verify(ctx, skipVerification ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nil)
        let alpn: [UInt8] = [2] + Array("h2".utf8)
        guard SSL_CTX_set_alpn_protos(ctx, alpn, UInt32(alpn.count)) == 0 else {
            throw TLSConfigurationError(.context, path: nil, reason: "cannot set ALPN: \(OpenSSLError.drain())")
        }
        return context
    }

    private static func makeContext(method: OpaquePointer?) throws(TLSConfigurationError) -> OpaquePointer {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(method) else {
            throw TLSConfigurationError(.context, path: nil, reason: OpenSSLError.drain())
        }
        _ = insight_SSL_CTX_set_min_proto_version(ctx, insight_TLS1_2_VERSION)
        insight_SSL_CTX_set_default_options(ctx)
        // No SSL_MODE_RELEASE_BUFFERS: it frees and re-allocates the ~17 KiB record buffers
        // around every read and write (4 allocations per flush). `TLSHandler` frees them once
        // the connection has been idle for a while instead (``TLSConnection/releaseRecordBuffers()``).
        // TLS 1.2: forward secrecy and AEAD only (RFC 9113 section 9.2.2); TLS 1.3 suites are all fine.
        _ = SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20")
        return ctx
    }

    private func useCertificate(chain: String, key: String) throws(TLSConfigurationError) {
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(self.ctx, chain) == 1 else {
            throw TLSConfigurationError(.certificateChain, path: chain, reason: OpenSSLError.drain())
        }
        guard SSL_CTX_use_PrivateKey_file(self.ctx, key, SSL_FILETYPE_PEM) == 1 else {
            throw TLSConfigurationError(.privateKey, path: key, reason: OpenSSLError.drain())
        }
        guard SSL_CTX_check_private_key(self.ctx) == 1 else {
            throw TLSConfigurationError(
                .privateKey, path: key, reason: "does not match the certificate in \(chain): \(OpenSSLError.drain())")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

// MARK: - callbacks (capture nothing; the connection comes back through the SSL's app data)

/// A ClientHello without ALPN would complete the handshake with no protocol agreed: refuse it
/// here, with the `no_application_protocol` alert, like a list without `h2`.
private let tlsClientHelloCallback:
    @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?)
        -> Int32 = { ssl, alert, _ in
            var data: UnsafePointer<UInt8>?
            var length = 0
            if SSL_client_hello_get0_ext(ssl, UInt32(insight_TLSEXT_TYPE_alpn), &data, &length) == 1 {
                return SSL_CLIENT_HELLO_SUCCESS
            }
            TLSConnection.from(ssl)?.offeredProtocols = []
            alert?.pointee = insight_SSL_AD_NO_APPLICATION_PROTOCOL
            return SSL_CLIENT_HELLO_ERROR
        }

/// Selects `h2` from the client's ALPN list, or fails the handshake with `no_application_protocol`.
private let tlsALPNSelectCallback:
    @convention(c) (
        OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
        UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
    ) -> Int32 = { ssl, out, outLength, input, inputLength, _ in
        guard let input else { return SSL_TLSEXT_ERR_ALERT_FATAL }
        let list = UnsafeBufferPointer(start: input, count: Int(inputLength))
        var offered: [String] = []
        var i = 0
        while i < list.count {
            let n = Int(list[i])
            guard i + 1 + n <= list.count else { break }
            let name = UnsafeBufferPointer(rebasing: list[(i + 1)..<(i + 1 + n)])
            if n == 2 && name[0] == UInt8(ascii: "h") && name[1] == UInt8(ascii: "2") {
                out?.pointee = input + i + 1
                outLength?.pointee = 2
                return SSL_TLSEXT_ERR_OK
            }
            offered.append(String(decoding: name, as: UTF8.self))
            i += 1 + n
        }
        TLSConnection.from(ssl)?.offeredProtocols = offered
        return SSL_TLSEXT_ERR_ALERT_FATAL
    }
