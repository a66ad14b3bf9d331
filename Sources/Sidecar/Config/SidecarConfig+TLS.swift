import H2Proxy
import Yams

extension SidecarConfig {
    /// `tls:`: TLS towards clients.
    public struct ServerTLS: Sendable, Equatable {
        public var cert: String?
        public var key: String?
        /// CA bundle client certificates are verified against; nil: clients are not asked for one.
        public var clientCA: String?
        public var requireClientCert = false

        public init() {}

        /// Files to watch for changes.
        var files: [String] { [self.cert, self.key, self.clientCA].compactMap { $0 } }
    }

    /// `upstream_tls:`: TLS towards the upstream hop.
    public struct ClientTLS: Sendable, Equatable {
        /// CA bundle; nil: the system trust store.
        public var ca: String?
        public var cert: String?
        public var key: String?
        /// SNI and the name verified in the upstream certificate; default: the upstream host.
        public var serverName: String?
        public var insecureSkipVerify = false

        public init() {}

        var files: [String] { [self.ca, self.cert, self.key].compactMap { $0 } }
    }

    func validateTLS() throws(ConfigError) {
        if let tls = self.tls {
            guard let cert = tls.cert, !cert.isEmpty else {
                throw ConfigError(field: "tls.cert", reason: "required when tls is set: PEM certificate chain")
            }
            guard let key = tls.key, !key.isEmpty else {
                throw ConfigError(field: "tls.key", reason: "required when tls is set: PEM private key")
            }
            if tls.requireClientCert && tls.clientCA == nil {
                throw ConfigError(field: "tls.client_ca", reason: "required when require_client_cert is true")
            }
        }
        if let up = self.upstreamTLS {
            if (up.cert == nil) != (up.key == nil) {
                throw ConfigError(
                    field: up.cert == nil ? "upstream_tls.cert" : "upstream_tls.key",
                    reason: "a client certificate needs both cert and key")
            }
            if let name = up.serverName, name.isEmpty {
                throw ConfigError(field: "upstream_tls.server_name", reason: "must not be empty")
            }
        }
    }

    /// Loads the certificates and keys: a server context for `tls`, a client one for
    /// `upstream_tls`. Errors name the field whose file is bad.
    public func makeTLSContexts() throws(ConfigError) -> (server: TLSContext?, client: TLSContext?) {
        var server: TLSContext?
        var client: TLSContext?
        if let tls = self.tls, let cert = tls.cert, let key = tls.key {
            do {
                server = try TLSContext.server(
                    certificateChain: cert, privateKey: key, clientCA: tls.clientCA,
                    requireClientCertificate: tls.requireClientCert)
            } catch {
                throw Self.configError(error, prefix: "tls", caField: "client_ca")
            }
        }
        if let up = self.upstreamTLS {
            let host = self.upstream?.host ?? ""
            let name = up.serverName ?? host
            do {
                client = try TLSContext.client(
                    trustRoots: up.ca, certificateChain: up.cert, privateKey: up.key, serverName: name,
                    verifyHost: name, skipVerification: up.insecureSkipVerify)
            } catch {
                throw Self.configError(error, prefix: "upstream_tls", caField: "ca")
            }
        }
        return (server, client)
    }

    private static func configError(_ error: TLSConfigurationError, prefix: String, caField: String) -> ConfigError {
        let field: String
        switch error.item {
        case .certificateChain: field = "cert"
        case .privateKey: field = "key"
        case .trustRoots, .clientCA: field = caField
        case .context: field = ""
        }
        return ConfigError(
            field: field.isEmpty ? prefix : "\(prefix).\(field)", reason: "\(error)".replacingNewlines())
    }

    static func parseServerTLS(_ node: Node) throws(ConfigError) -> ServerTLS {
        guard let map = node.mapping else { throw ConfigError(field: "tls", reason: "must be a mapping") }
        var tls = ServerTLS()
        for (k, v) in map {
            let name = "tls.\(k.string ?? "")"
            switch k.string ?? "" {
            case "cert": tls.cert = try v.yamlText(name)
            case "key": tls.key = try v.yamlText(name)
            case "client_ca": tls.clientCA = try v.yamlText(name)
            case "require_client_cert": tls.requireClientCert = try v.yamlBoolean(name)
            default: throw ConfigError(field: name, reason: "unknown key")
            }
        }
        return tls
    }

    static func parseClientTLS(_ node: Node) throws(ConfigError) -> ClientTLS {
        guard let map = node.mapping else { throw ConfigError(field: "upstream_tls", reason: "must be a mapping") }
        var tls = ClientTLS()
        for (k, v) in map {
            let name = "upstream_tls.\(k.string ?? "")"
            switch k.string ?? "" {
            case "ca": tls.ca = try v.yamlText(name)
            case "cert": tls.cert = try v.yamlText(name)
            case "key": tls.key = try v.yamlText(name)
            case "server_name": tls.serverName = try v.yamlText(name)
            case "insecure_skip_verify": tls.insecureSkipVerify = try v.yamlBoolean(name)
            default: throw ConfigError(field: name, reason: "unknown key")
            }
        }
        return tls
    }
}
