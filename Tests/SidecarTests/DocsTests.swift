import Foundation
import Testing

@testable import Sidecar

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
        let keys = try Self.yamlKeys(in: "Sources/Sidecar/Config/SidecarConfig+YAML.swift")
            .union(Self.yamlKeys(in: "Sources/Sidecar/Probes/ProbeConfig+YAML.swift"))
            .union(Self.yamlKeys(in: "Sources/Sidecar/Tracing/TracingOptions+YAML.swift"))
        #expect(keys.count > 30)
        let doc = try String(
            contentsOf: Self.root.appendingPathComponent("Docs/configuration.md"), encoding: .utf8)
        let missing = keys.filter { !doc.contains("`\($0)`") && !doc.contains("`\($0):") }.sorted()
        #expect(missing.isEmpty, "Docs/configuration.md lacks: \(missing.joined(separator: ", "))")
    }
}

/// Keeps Docs/metrics.md and the access log table in Docs/operations.md true to the code.
@Suite struct DocsMatchCodeTests {
    static func text(_ file: String) throws -> String {
        try String(contentsOf: DocsTests.root.appendingPathComponent(file), encoding: .utf8)
    }

    /// Every `"insight_…"` string literal in Sources: metric family names are all literals, so
    /// families registered lazily (TLS, probes, hop metrics on first use) are found too.
    static func metricNamesInSources() throws -> (names: Set<String>, built: [String]) {
        let sources = DocsTests.root.appendingPathComponent("Sources")
        var names = Set<String>()
        var built: [String] = []
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)
        while let url = files?.nextObject() as? URL {
            guard url.pathExtension == "swift" else { continue }
            let text = try String(contentsOf: url, encoding: .utf8)
            var rest = text[...]
            while let r = rest.range(of: "\"insight_") {
                let name = rest[rest.index(after: r.lowerBound)...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                let after = rest[rest.index(after: r.lowerBound)...].dropFirst(name.count).first
                if after == "\"" {
                    names.insert(String(name))
                } else {
                    built.append("\(url.lastPathComponent): \(name)")
                }
                rest = rest[r.upperBound...]
            }
        }
        return (names, built)
    }

    /// Metric names in the first column of the tables of Docs/metrics.md.
    static func documentedMetricNames() throws -> Set<String> {
        var names = Set<String>()
        for line in try Self.text("Docs/metrics.md").split(separator: "\n") where line.hasPrefix("| `insight_") {
            let name = line.dropFirst(3).prefix { $0 != "`" }
            names.insert(String(name))
        }
        return names
    }

    @Test func everyMetricFamilyIsDocumentedAndViceVersa() throws {
        let (code, built) = try Self.metricNamesInSources()
        #expect(built.isEmpty, "metric names not written as one literal cannot be checked: \(built)")
        #expect(code.count > 30)
        let docs = try Self.documentedMetricNames()
        let undocumented = code.subtracting(docs).sorted()
        let stale = docs.subtracting(code).sorted()
        #expect(undocumented.isEmpty, "exported but not in Docs/metrics.md: \(undocumented.joined(separator: ", "))")
        #expect(stale.isEmpty, "in Docs/metrics.md but not exported: \(stale.joined(separator: ", "))")
    }

    /// The rows of the table under `## Access log` in Docs/operations.md: (field, meaning).
    static func accessLogRows() throws -> [(field: String, meaning: String)] {
        let doc = try Self.text("Docs/operations.md")
        guard let start = doc.range(of: "\n## Access log\n") else { return [] }
        let section = doc[start.upperBound...]
        let end = section.range(of: "\n## ")?.lowerBound ?? section.endIndex
        return section[..<end].split(separator: "\n").compactMap { line in
            guard line.hasPrefix("| `") else { return nil }
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            return (String(cells[0].dropFirst().dropLast()), cells.last ?? "")
        }
    }

    @Test func accessLogFieldsAreDocumentedInOrder() throws {
        let rows = try Self.accessLogRows()
        #expect(rows.map(\.field) == AccessLog.Field.allCases.map(\.rawValue))
        let endRow = rows.first { $0.field == "end" }?.meaning ?? ""
        for word in AccessLog.End.allCases.map(\.rawValue) {
            #expect(endRow.contains("`\(word)`"), "end word \(word) not documented")
        }
    }
}
