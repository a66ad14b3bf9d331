/// Bounds on YAML text before it reaches the parser: libyaml recurses once per level of flow
/// nesting, so thousands of `{` overflow the stack (found by the config fuzzer).
enum YAMLLimits {
    static let maxBytes = 1 << 20
    static let maxFlowDepth = 64
    /// Bytes after which a quoted scalar may start: space, tab, newline, `[`, `{`, `,`, `:`, `-`.
    static let scalarStart: [UInt8] = [0x20, 0x09, 0x0A, 0x5B, 0x7B, 0x2C, 0x3A, 0x2D]

    static func check(_ text: String, field: String) throws(ConfigError) {
        guard text.utf8.count <= Self.maxBytes else {
            throw ConfigError(field: field, reason: "larger than \(Self.maxBytes) bytes")
        }
        var depth = 0
        var quote: UInt8?
        var comment = false
        var previous: UInt8 = 0x20
        for byte in text.utf8 {
            defer { previous = byte }
            if byte == 0x0A {
                comment = false
                continue
            }
            if comment { continue }
            if let q = quote {
                if byte == q && previous != 0x5C { quote = nil }
                continue
            }
            switch byte {
            // A quote opens a scalar only where a scalar can start (YAML allows ' inside words).
            case 0x22 where Self.scalarStart.contains(previous), 0x27 where Self.scalarStart.contains(previous):
                quote = byte
            case 0x23 where previous == 0x20 || previous == 0x09 || previous == 0x0A: comment = true  // #
            case 0x5B, 0x7B:  // [ {
                depth += 1
                if depth > Self.maxFlowDepth {
                    throw ConfigError(field: field, reason: "nested more than \(Self.maxFlowDepth) levels deep")
                }
            case 0x5D, 0x7D: depth = max(0, depth - 1)  // ] }
            default: break
            }
        }
    }
}
