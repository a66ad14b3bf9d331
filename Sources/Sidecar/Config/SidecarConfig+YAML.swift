import Logging
import NIOCore
import Yams

extension SidecarConfig {
    /// Reads a YAML config file's text over the defaults. Unknown keys are errors, so a typo
    /// never silently falls back to a default.
    public static func load(yaml text: String) throws(ConfigError) -> SidecarConfig {
        try YAMLLimits.check(text, field: "config")
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError(field: "config", reason: "not valid YAML: \(error)".replacingNewlines())
        }
        var config = SidecarConfig()
        guard let node else { return config }
        try YAMLLimits.checkDuplicateKeys(node, field: "")
        guard let map = node.mapping else { throw ConfigError(field: "config", reason: "top level must be a mapping") }
        for (keyNode, value) in map {
            let key = keyNode.string ?? ""
            switch key {
            case "listen": config.listen = try HostPort(parsing: try value.yamlText(key), field: key)
            case "upstream": config.upstream = try HostPort(parsing: try value.yamlText(key), field: key)
            case "hop": config.hop = try value.yamlText(key)
            case "region": config.region = try value.yamlText(key)
            case "admin": config.admin = try HostPort(parsing: try value.yamlText(key), field: key)
            case "event_loops": config.eventLoops = try value.yamlInteger(key)
            case "admin_idle_timeout":
                config.adminIdleTimeout = try Self.connectTimeout(try value.yamlText(key), field: key)
            case "drain_timeout": config.drainTimeout = try DurationValue.parse(try value.yamlText(key), field: key)
            case "connect_timeout": config.connectTimeout = try Self.connectTimeout(try value.yamlText(key), field: key)
            case "log_level": config.logLevel = try parseLogLevel(try value.yamlText(key), field: key)
            case "timing": config.timing = try value.yamlBoolean(key)
            case "receiver": config.receiver = try value.yamlBoolean(key)
            case "probes": config.probes = try ProbeConfig.load(value, field: key)
            case "hop_limit": config.hopLimit = try value.yamlInteger(key)
            case "strip_request_headers": config.stripRequestHeaders = try value.yamlBoolean(key)
            case "strip_response_timing": config.stripResponseTiming = try value.yamlBoolean(key)
            case "max_routes": config.maxRoutes = try value.yamlInteger(key)
            case "access_log": config.accessLog = try value.yamlText(key)
            case "tls": config.tls = try parseServerTLS(value)
            case "upstream_tls": config.upstreamTLS = try parseClientTLS(value)
            case "tracing": config.tracing = try TracingOptions.load(value, field: key)
            case "server_timing": config.serverTiming = try value.yamlBoolean(key)
            case "limits":
                guard let limits = value.mapping else { throw ConfigError(field: key, reason: "must be a mapping") }
                for (k, v) in limits {
                    let name = "limits.\(k.string ?? "")"
                    switch k.string ?? "" {
                    case "max_concurrent_streams": config.limits.maxConcurrentStreams = try v.yamlInteger(name)
                    case "max_header_list_size": config.limits.maxHeaderListSize = try v.yamlInteger(name)
                    case "initial_window_size": config.limits.initialWindowSize = try v.yamlInteger(name)
                    case "connection_window_size": config.limits.connectionWindowSize = try v.yamlInteger(name)
                    case "max_upstream_connections": config.limits.maxUpstreamConnections = try v.yamlInteger(name)
                    case "stream_reset_burst": config.limits.streamResetBurst = try v.yamlInteger(name)
                    case "stream_reset_rate": config.limits.streamResetRate = try v.yamlInteger(name)
                    case "max_continuations": config.limits.maxContinuations = try v.yamlInteger(name)
                    case "max_connections": config.limits.maxConnections = try v.yamlInteger(name)
                    case "max_queued_control_bytes": config.limits.maxQueuedControlBytes = try v.yamlInteger(name)
                    case "connection_buffer_budget": config.limits.connectionBufferBudget = try v.yamlInteger(name)
                    case "idle_timeout":
                        config.limits.idleTimeout = try DurationValue.parse(try v.yamlText(name), field: name)
                    case "handshake_timeout":
                        config.limits.handshakeTimeout = try DurationValue.parse(try v.yamlText(name), field: name)
                    case "preface_timeout":
                        config.limits.prefaceTimeout = try DurationValue.parse(try v.yamlText(name), field: name)
                    case "max_connection_age":
                        let text = try v.yamlText(name)
                        config.limits.maxConnectionAge =
                            text == "0" ? nil : try DurationValue.parse(text, field: name)
                    case "upstream_wait_timeout":
                        config.limits.upstreamWaitTimeout = try DurationValue.parse(try v.yamlText(name), field: name)
                    case "upstream_idle_timeout":
                        config.limits.upstreamIdleTimeout = try DurationValue.parse(try v.yamlText(name), field: name)
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

extension SidecarConfig {
    /// `connect_timeout` (and `admin_idle_timeout`) from a flag or YAML: a duration above zero (a zero
    /// timeout fails every connect, or closes every admin connection at once).
    static func connectTimeout(_ text: String, field: String) throws(ConfigError) -> TimeAmount {
        let t = try DurationValue.parse(text, field: field)
        guard t > .zero else { throw ConfigError(field: field, reason: "must be more than 0, got \"\(text)\"") }
        return t
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

extension String {
    func replacingNewlines() -> String {
        String(self.map { $0 == "\n" ? " " : $0 })
    }
}
