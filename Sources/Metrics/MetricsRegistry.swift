import Foundation

/// Owns every metric family and renders them in the Prometheus text format (version 0.0.4).
///
/// Series are created at start-up or when a new label set first appears (under a lock); the
/// data path only touches the atomics inside ``Counter`` and ``Gauge``. Label sets are
/// rendered once, when the series is created.
public final class MetricsRegistry: @unchecked Sendable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }

    private final class Family {
        let name: String
        let help: String
        let kind: Kind
        var series: [(labels: String, metric: AnyObject)] = []
        var index: [String: Int] = [:]
        init(name: String, help: String, kind: Kind) {
            self.name = name
            self.help = help
            self.kind = kind
        }
    }

    private let lock = NSLock()
    private var families: [Family] = []
    private var byName: [String: Family] = [:]

    public init() {}

    public func counter(_ name: String, help: String, labels: [(String, String)] = []) -> Counter {
        self.series(name, help: help, kind: .counter, labels: labels) { Counter() }
    }

    public func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Gauge {
        self.series(name, help: help, kind: .gauge, labels: labels) { Gauge() }
    }

    public func histogram(
        _ name: String, help: String, labels: [(String, String)] = [], buckets: [Double] = Histogram.defaultBuckets
    ) -> Histogram {
        self.series(name, help: help, kind: .histogram, labels: labels) { Histogram(buckets: buckets) }
    }

    /// Declares a family with no series yet, so `# HELP`/`# TYPE` appear from the start.
    public func declare(_ name: String, help: String, kind: Kind) {
        self.lock.lock()
        defer { self.lock.unlock() }
        _ = self.family(name, help: help, kind: kind)
    }

    private func family(_ name: String, help: String, kind: Kind) -> Family {
        if let f = self.byName[name] { return f }
        let f = Family(name: name, help: help, kind: kind)
        self.byName[name] = f
        self.families.append(f)
        return f
    }

    private func series<M: AnyObject>(
        _ name: String, help: String, kind: Kind, labels: [(String, String)], make: () -> M
    ) -> M {
        let rendered = Self.render(labels: labels)
        self.lock.lock()
        defer { self.lock.unlock() }
        let f = self.family(name, help: help, kind: kind)
        if let i = f.index[rendered], let existing = f.series[i].metric as? M { return existing }
        let m = make()
        f.index[rendered] = f.series.count
        f.series.append((rendered, m))
        return m
    }

    /// Drops every series of family `name` whose labels include all of `matching` (for targets
    /// that are gone, so their last value does not linger).
    public func remove(_ name: String, matching: [(String, String)]) {
        let needles = matching.map { MetricsRegistry.render(labels: [$0]).dropFirst().dropLast() }
        self.lock.lock()
        defer { self.lock.unlock() }
        guard let f = self.byName[name] else { return }
        f.series.removeAll { series in needles.allSatisfy { series.labels.contains($0) } }
        f.index = [:]
        for (i, s) in f.series.enumerated() { f.index[s.labels] = i }
    }

    /// Number of series in family `name` (to bound label cardinality).
    public func seriesCount(_ name: String) -> Int {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.byName[name]?.series.count ?? 0
    }

    public static func render(labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        var out = "{"
        for (i, (k, v)) in labels.enumerated() {
            if i > 0 { out += "," }
            out += k
            out += "=\""
            for ch in v.unicodeScalars {
                switch ch {
                case "\\": out += "\\\\"
                case "\"": out += "\\\""
                case "\n": out += "\\n"
                default: out.unicodeScalars.append(ch)
                }
            }
            out += "\""
        }
        return out + "}"
    }

    /// The exposition text for every family: Prometheus text 0.0.4, or OpenMetrics 1.0
    /// (with exemplars and `# EOF`) when `openMetrics` is true.
    public func render(openMetrics: Bool = false) -> String {
        self.lock.lock()
        let snapshot = self.families.map { ($0.name, $0.help, $0.kind, $0.series) }
        self.lock.unlock()
        var out = ""
        out.reserveCapacity(4096)
        for (name, help, kind, series) in snapshot {
            // OpenMetrics names a counter family without its `_total` suffix.
            let family = openMetrics && kind == .counter && name.hasSuffix("_total") ? String(name.dropLast(6)) : name
            out += "# HELP \(family) \(help)\n# TYPE \(family) \(kind.rawValue)\n"
            for (labels, metric) in series {
                switch metric {
                case let c as Counter: out += "\(name)\(labels) \(c.value)\n"
                case let g as Gauge: out += "\(name)\(labels) \(g.value)\n"
                case let h as Histogram: h.render(name: name, labels: labels, openMetrics: openMetrics, into: &out)
                default: break
                }
            }
        }
        if openMetrics { out += "# EOF\n" }
        return out
    }
}
