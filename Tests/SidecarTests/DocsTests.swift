import Foundation
import Testing

/// Keeps Docs/configuration.md true: every YAML key the loaders accept must be documented.
@Suite struct DocsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func yamlKeys(in file: String) throws -> Set<String> {
        let text = try String(contentsOf: Self.root.appendingPathComponent(file), encoding: .utf8)
        var keys = Set<String>()
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("case \""), let end = trimmed.dropFirst(6).firstIndex(of: "\"") else { continue }
            keys.insert(String(trimmed.dropFirst(6)[..<end]))
        }
        // `case "true", "yes", "on"` parse booleans; they are values, not keys.
        return keys.subtracting(["true", "false", "yes", "no", "on", "off"])
    }

    @Test func everyConfigKeyIsDocumented() throws {
        let keys = try Self.yamlKeys(in: "Sources/Sidecar/SidecarConfig+YAML.swift")
            .union(Self.yamlKeys(in: "Sources/Sidecar/Probes/ProbeConfig+YAML.swift"))
        #expect(keys.count > 30)
        let doc = try String(
            contentsOf: Self.root.appendingPathComponent("Docs/configuration.md"), encoding: .utf8)
        let missing = keys.filter { !doc.contains("`\($0)`") && !doc.contains("`\($0):") }.sorted()
        #expect(missing.isEmpty, "Docs/configuration.md lacks: \(missing.joined(separator: ", "))")
    }
}
