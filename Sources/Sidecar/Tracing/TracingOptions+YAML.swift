import Yams

extension TracingOptions {
    /// Reads the `tracing:` mapping; every unknown key is an error naming it.
    static func load(_ node: Node, field: String) throws(ConfigError) -> TracingOptions {
        guard let map = node.mapping else { throw ConfigError(field: field, reason: "must be a mapping") }
        var t = TracingOptions()
        for (k, v) in map {
            let key = k.string ?? ""
            let name = "\(field).\(key)"
            switch key {
            case "otlp_endpoint": t.otlpEndpoint = try v.yamlText(name)
            case "sample_ratio": t.sampleRatio = try Self.ratio(try v.yamlText(name), field: name)
            case "service_name": t.serviceName = try v.yamlText(name)
            case "max_queued_spans": t.maxQueuedSpans = try v.yamlInteger(name)
            case "headers":
                guard let headers = v.mapping else {
                    throw ConfigError(field: name, reason: "must map header names to values")
                }
                t.headers = try headers.map { (hk, hv) throws(ConfigError) in
                    HeaderPair(name: hk.string ?? "", value: try hv.yamlText("\(name).\(hk.string ?? "")"))
                }
            default: throw ConfigError(field: name, reason: "unknown key")
            }
        }
        return t
    }

    /// `sample_ratio` from YAML or a flag: a number from 0 to 1.
    static func ratio(_ text: String, field: String) throws(ConfigError) -> Double {
        guard let v = Double(text), v.isFinite, (0...1).contains(v) else {
            throw ConfigError(field: field, reason: "must be a number from 0 to 1, got \"\(text)\"")
        }
        return v
    }

    /// `--tracing-header NAME=VALUE`.
    static func header(_ text: String) throws(ConfigError) -> HeaderPair {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw ConfigError(field: "tracing.headers", reason: "expected NAME=VALUE, got \"\(text)\"")
        }
        return HeaderPair(name: String(text[..<eq]), value: String(text[text.index(after: eq)...]))
    }
}
