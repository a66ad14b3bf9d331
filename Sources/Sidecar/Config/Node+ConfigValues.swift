import Yams

/// Scalar readers for the config loaders: each error names the field.
extension Node {
    func yamlText(_ field: String) throws(ConfigError) -> String {
        guard let s = self.scalar?.string else { throw ConfigError(field: field, reason: "must be a string") }
        return s
    }

    func yamlInteger(_ field: String) throws(ConfigError) -> Int {
        guard let s = self.scalar?.string, let v = Int(s) else {
            throw ConfigError(
                field: field, reason: "must be an integer, got \"\(self.scalar?.string ?? "non-scalar")\"")
        }
        return v
    }

    func yamlBoolean(_ field: String) throws(ConfigError) -> Bool {
        switch self.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigError(field: field, reason: "must be true or false")
        }
    }
}
