import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a connection to a hop failed, in the words an operator reads in `grpc-message`, a 502/503
/// body or a log line ("connection refused", "TLS handshake failed: certificate has expired"),
/// never a dump of a Swift error type.
public enum UpstreamFailure {
    /// One plain phrase for `error`: an errno's text for socket errors, the timeout for a
    /// connect that took too long, the reason for a failed TLS handshake.
    public static func describe(_ error: Error) -> String {
        switch error {
        case let e as NIOConnectionError:
            if let first = e.connectionErrors.first { return Self.describe(first.error) }
            if let dns = e.dnsAError ?? e.dnsAAAAError { return Self.describe(dns) }
            return "no address found for \(e.host)"
        case let e as SocketAddressError.UnknownHost:
            // "Name or service not known": the resolver's own words, lowercased.
            return "cannot resolve \(e.host): \(Self.lowercasedFirst(e.errorDescription))"
        case let e as IOError:
            return Self.errnoText(e.errnoCode)
        case ChannelError.connectTimeout(let t):
            return "no TCP connection within \(Self.describe(t))"
        case let e as TLSHandshakeFailure:
            return e.plainDescription
        case ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed, ChannelError.eof:
            return "connection closed"
        default:
            return "\(error)"
        }
    }

    /// `ECONNREFUSED` → "connection refused": the C library's text, first letter lowercased.
    public static func errnoText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return Self.lowercasedFirst(String(cString: text))
    }

    /// "Connection refused" → "connection refused"; "TLS …" stays as it is.
    static func lowercasedFirst(_ s: String) -> String {
        guard let first = s.first, first.isUppercase, s.dropFirst().first?.isLowercase ?? false else { return s }
        return first.lowercased() + s.dropFirst()
    }

    /// `1s`, `1500ms`: how durations appear in messages (the same as in the configuration).
    public static func describe(_ t: TimeAmount) -> String {
        let ms = t.nanoseconds / 1_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}

extension TLSHandshakeFailure {
    /// "TLS handshake failed: the certificate does not match the host name (…)".
    var plainDescription: String {
        let what: String =
            switch self.reason {
            case .noApplicationProtocol: "the peer does not speak HTTP/2 (no ALPN h2)"
            case .certificateExpired: "the certificate has expired"
            case .certificateNotYetValid: "the certificate is not valid yet"
            case .certificateUntrusted: "the certificate is not trusted (unknown issuer)"
            case .hostnameMismatch: "the certificate does not match the host name"
            case .certificateRequired: "a client certificate is required"
            case .certificateInvalid: "the certificate is invalid"
            case .alertReceived: "the peer refused the handshake"
            case .notTLS: "the peer does not speak TLS"
            case .tlsOnPlaintextPort: "TLS sent to a plaintext port"
            case .protocolVersion: "no TLS version in common"
            case .noSharedCipher: "no cipher in common"
            case .truncated: "the connection closed during the handshake"
            case .timeout: "no complete handshake in time"
            case .other: "error"
            }
        return self.detail.isEmpty ? "TLS handshake failed: \(what)" : "TLS handshake failed: \(what) (\(self.detail))"
    }
}
