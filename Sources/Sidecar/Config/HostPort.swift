/// `HOST:PORT` as written in flags and YAML; IPv6 hosts in brackets (`[::1]:8080`).
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String, field: String) throws(ConfigError) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ConfigError(field: field, reason: "expected [IPv6]:PORT, got \"\(text)\"")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ConfigError(field: field, reason: "expected HOST:PORT, got \"\(text)\"")
            }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard !hostPart.isEmpty else { throw ConfigError(field: field, reason: "host is empty in \"\(text)\"") }
        guard let port = Int(portPart), (0...65535).contains(port) else {
            throw ConfigError(field: field, reason: "port must be 0-65535, got \"\(portPart)\"")
        }
        self.host = String(hostPart)
        self.port = port
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}
