import H2Proxy

/// This hop's entry in the W3C Server Timing field (https://www.w3.org/TR/server-timing/):
/// `insight-<hop>;dur=<ms>;desc="<region>"`, appended to whatever the field already says.
enum ServerTiming {
    /// The entry; hop and region are checked at start-up to need no quoting or escaping.
    static func entry(hop: String, region: String, milliseconds: Double) -> String {
        let micros = max(0, min(Int64((milliseconds * 1000).rounded()), 999_999_999_999))
        var ms = String(micros / 1000)
        let frac = micros % 1000
        if frac != 0 {
            var f = String(frac)
            while f.count < 3 { f = "0" + f }
            while f.hasSuffix("0") { f.removeLast() }
            ms += "." + f
        }
        return "insight-\(hop);dur=\(ms);desc=\"\(region)\""
    }

    /// Appends `entry` to the `server-timing` fields of `headers` (joined into one field), or,
    /// with `strip`, removes every `insight-` entry and adds none.
    static func apply(_ headers: inout HeaderBlock, entry: String?, strip: Bool) {
        var existing: [String] = []
        for i in 0..<headers.count where headers.nameEquals(at: i, "server-timing") {
            existing.append(headers.valueString(at: i))
        }
        if existing.isEmpty {
            if !strip, let entry { headers.append(name: "server-timing", value: entry) }
            return
        }
        var entries = existing.flatMap(self.split)
        if strip { entries.removeAll { self.name(of: $0).hasPrefix("insight-") } }
        if !strip, let entry { entries.append(entry) }
        headers.remove(name: "server-timing")
        if !entries.isEmpty { headers.append(name: "server-timing", value: entries.joined(separator: ", ")) }
    }

    /// Splits a field value at commas outside quoted strings; entries are trimmed, empty ones dropped.
    static func split(_ value: String) -> [String] {
        var out: [String] = []
        var current: [UInt8] = []
        var quoted = false
        var escaped = false
        func flush() {
            let s = String(decoding: current, as: UTF8.self).trimmingSpaces()
            if !s.isEmpty { out.append(s) }
            current.removeAll()
        }
        for c in value.utf8 {
            if quoted {
                if escaped {
                    escaped = false
                } else if c == UInt8(ascii: "\\") {
                    escaped = true
                } else if c == UInt8(ascii: "\"") {
                    quoted = false
                }
                current.append(c)
            } else if c == UInt8(ascii: ",") {
                flush()
            } else {
                if c == UInt8(ascii: "\"") { quoted = true }
                current.append(c)
            }
        }
        flush()
        return out
    }

    /// An entry's metric name: the text before its first `;`, trimmed.
    static func name(of entry: String) -> String {
        String(entry.prefix { $0 != ";" }).trimmingSpaces()
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
