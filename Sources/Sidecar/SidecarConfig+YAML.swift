import Logging
import Yams

extension SidecarConfig {
    /// Reads a YAML config file's text over the defaults. Unknown keys are errors, so a typo
    /// never silently falls back to a default.
    public static func load(yaml text: String) throws(ConfigError) -> SidecarConfig {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError(field: "config", reason: "not valid YAML: \(error)".replacingNewlines())
        }
        var config = SidecarConfig()
        guard let node else { return config }
        guard let map = node.mapping else { throw ConfigError(field: "config", reason: "top level must be a mapping") }
        for (keyNode, value) in map {
            let key = keyNode.string ?? ""
            switch key {
            case "listen": config.listen = try HostPort(parsing: try value.text(key), field: key)
            case "upstream": config.upstream = try HostPort(parsing: try value.text(key), field: key)
            case "hop": config.hop = try value.text(key)
            case "region": config.region = try value.text(key)
            case "admin": config.admin = try HostPort(parsing: try value.text(key), field: key)
            case "event_loops": config.eventLoops = try value.integer(key)
            case "drain_timeout": config.drainTimeout = try DurationValue.parse(try value.text(key), field: key)
            case "connect_timeout": config.connectTimeout = try DurationValue.parse(try value.text(key), field: key)
            case "log_level": config.logLevel = try parseLogLevel(try value.text(key), field: key)
            case "timing": config.timing = try value.boolean(key)
            case "hop_limit": config.hopLimit = try value.integer(key)
            case "strip_request_headers": config.stripRequestHeaders = try value.boolean(key)
            case "strip_response_timing": config.stripResponseTiming = try value.boolean(key)
            case "max_routes": config.maxRoutes = try value.integer(key)
            case "access_log": config.accessLog = try value.text(key)
            case "tls": config.tls = try parseServerTLS(value)
            case "upstream_tls": config.upstreamTLS = try parseClientTLS(value)
            case "limits":
                guard let limits = value.mapping else { throw ConfigError(field: key, reason: "must be a mapping") }
                for (k, v) in limits {
                    let name = "limits.\(k.string ?? "")"
                    switch k.string ?? "" {
                    case "max_concurrent_streams": config.limits.maxConcurrentStreams = try v.integer(name)
                    case "max_header_list_size": config.limits.maxHeaderListSize = try v.integer(name)
                    case "initial_window_size": config.limits.initialWindowSize = try v.integer(name)
                    case "connection_window_size": config.limits.connectionWindowSize = try v.integer(name)
                    case "max_upstream_connections": config.limits.maxUpstreamConnections = try v.integer(name)
                    case "stream_reset_burst": config.limits.streamResetBurst = try v.integer(name)
                    case "stream_reset_rate": config.limits.streamResetRate = try v.integer(name)
                    case "max_continuations": config.limits.maxContinuations = try v.integer(name)
                    default: throw ConfigError(field: name, reason: "unknown key")
                    }
                }
            default:
                throw ConfigError(field: key, reason: "unknown key")
            }
        }
        return config
    }
}

func parseLogLevel(_ text: String, field: String) throws(ConfigError) -> Logger.Level {
    guard let level = Logger.Level(rawValue: text.lowercased()) else {
        throw ConfigError(
            field: field,
            reason: "expected one of trace, debug, info, notice, warning, error, critical; got \"\(text)\"")
    }
    return level
}

extension Node {
    func text(_ field: String) throws(ConfigError) -> String {
        guard let s = self.scalar?.string else { throw ConfigError(field: field, reason: "must be a string") }
        return s
    }

    func boolean(_ field: String) throws(ConfigError) -> Bool {
        switch self.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigError(field: field, reason: "must be true or false")
        }
    }

    fileprivate func integer(_ field: String) throws(ConfigError) -> Int {
        guard let s = self.scalar?.string, let v = Int(s) else {
            throw ConfigError(
                field: field, reason: "must be an integer, got \"\(self.scalar?.string ?? "non-scalar")\"")
        }
        return v
    }
}

extension String {
    func replacingNewlines() -> String {
        String(self.map { $0 == "\n" ? " " : $0 })
    }
}
