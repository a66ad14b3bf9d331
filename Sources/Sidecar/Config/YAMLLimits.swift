import Yams

/// Bounds on YAML text before it reaches the parser: libyaml recurses once per nesting level,
/// so deep nesting overflows the stack (found by the config fuzzer with thousands of `{`).
/// Flow nesting (`[`, `{`), block indicators stacked on one line (`- - - x`, `? ? x`) and
/// indentation are all bounded; real configs are a few levels deep.
enum YAMLLimits {
    static let maxBytes = 1 << 20
    static let maxDepth = 64
    static let maxIndent = 256
    /// Bytes after which a quoted scalar may start: space, tab, newline, `[`, `{`, `,`, `:`, `-`.
    static let scalarStart: [UInt8] = [0x20, 0x09, 0x0A, 0x5B, 0x7B, 0x2C, 0x3A, 0x2D]

    static func check(_ text: String, field: String) throws(ConfigError) {
        guard text.utf8.count <= Self.maxBytes else {
            throw ConfigError(field: field, reason: "larger than \(Self.maxBytes) bytes")
        }
        var depth = 0
        var quote: UInt8?
        var comment = false
        var previous: UInt8 = 0x0A
        var lineStart = true
        var indent = 0
        var indicators = 0
        for byte in text.utf8 {
            defer { previous = byte }
            if byte == 0x0A {
                comment = false
                lineStart = true
                indent = 0
                indicators = 0
                continue
            }
            if comment { continue }
            if let q = quote {
                if byte == q && previous != 0x5C { quote = nil }
                continue
            }
            if lineStart {
                // Leading spaces, then any run of "- " / "? " / ": " block indicators.
                if byte == 0x20 && (previous == 0x2D || previous == 0x3F || previous == 0x3A) {
                    indicators += 1
                    if indicators > Self.maxDepth {
                        throw ConfigError(field: field, reason: "nested more than \(Self.maxDepth) levels deep")
                    }
                    continue
                }
                if byte == 0x20 && indicators == 0 {
                    indent += 1
                    if indent > Self.maxIndent {
                        throw ConfigError(field: field, reason: "indented more than \(Self.maxIndent) columns")
                    }
                    continue
                }
                if byte == 0x2D || byte == 0x3F || byte == 0x3A {  // - ? :
                    continue
                }
                if byte == 0x20 { continue }
                lineStart = false
            }
            switch byte {
            // A quote opens a scalar only where a scalar can start (YAML allows ' inside words).
            case 0x22 where Self.scalarStart.contains(previous), 0x27 where Self.scalarStart.contains(previous):
                quote = byte
            case 0x23 where previous == 0x20 || previous == 0x09: comment = true  // #
            case 0x5B, 0x7B:  // [ {
                depth += 1
                if depth > Self.maxDepth {
                    throw ConfigError(field: field, reason: "nested more than \(Self.maxDepth) levels deep")
                }
            case 0x5D, 0x7D: depth = max(0, depth - 1)  // ] }
            default: break
            }
        }
    }

    /// Rejects a mapping that repeats a key, at any depth: the YAML spec requires unique keys,
    /// but the parser keeps the last one, so a second `limits:` block would silently replace
    /// the first. `field` is the path of `node` (`""` at the top); the error names the key's path.
    static func checkDuplicateKeys(_ node: Node, field: String) throws(ConfigError) {
        if let mapping = node.mapping {
            var seen = Set<String>()
            for (key, value) in mapping {
                let name = key.string ?? "?"
                let path = field.isEmpty ? name : "\(field).\(name)"
                if !seen.insert(name).inserted {
                    throw ConfigError(
                        field: path, reason: "duplicate key (a second \(name): would replace the first)")
                }
                try Self.checkDuplicateKeys(value, field: path)
            }
        } else if let sequence = node.sequence {
            for (i, item) in sequence.enumerated() {
                try Self.checkDuplicateKeys(item, field: "\(field)[\(i)]")
            }
        }
    }
}
