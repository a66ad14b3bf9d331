internal import COpenSSL

/// Reads OpenSSL's per-thread error queue.
enum OpenSSLError {
    /// All queued errors as one line, emptying the queue.
    static func drain() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            parts.append(Self.describe(code))
        }
        return parts.isEmpty ? "unknown OpenSSL error" : parts.joined(separator: "; ")
    }

    static func describe(_ code: UInt) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer in
            ERR_error_string_n(code, buffer.baseAddress, 256)
            return String(cString: buffer.baseAddress!)
        }
    }
}
