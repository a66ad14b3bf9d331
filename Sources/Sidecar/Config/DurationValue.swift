import Foundation
import NIOCore

/// Durations as written in flags and YAML: `250ms`, `5s`, `2m`, `1h`, or plain seconds.
enum DurationValue {
    static func parse(_ text: String, field: String) throws(ConfigError) -> TimeAmount {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("s", 1), ("m", 60), ("h", 3600)]
        // Up to ten years: anything longer is a typo, and would overflow nanoseconds in Int64.
        let maxSeconds = 10.0 * 365 * 24 * 3600
        var number = Substring(t)
        var scale = 1.0
        for (suffix, s) in units where t.hasSuffix(suffix) {
            number = t.dropLast(suffix.count)
            scale = s
            break
        }
        // Digits with an optional fraction: no signs, exponents, "inf" or "nan".
        let parts = number.split(separator: ".", omittingEmptySubsequences: false)
        guard !number.isEmpty, parts.count <= 2,
            parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy({ ("0"..."9").contains($0) }) }),
            let v = Double(number)
        else {
            throw ConfigError(field: field, reason: "expected a duration like 500ms, 5s or 2m, got \"\(text)\"")
        }
        guard v * scale <= maxSeconds else {
            throw ConfigError(field: field, reason: "at most ten years, got \"\(text)\"")
        }
        return .nanoseconds(Int64(v * scale * 1e9))
    }

    static func format(_ t: TimeAmount) -> String {
        let ns = t.nanoseconds
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        return "\(ns / 1_000_000)ms"
    }
}
