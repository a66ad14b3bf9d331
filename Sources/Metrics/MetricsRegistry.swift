import Foundation

/// Owns every metric family and renders them in the Prometheus text format (version 0.0.4)
/// or OpenMetrics 1.0.
///
/// Series are created at start-up or when a new label set first appears (under a lock); the
/// data path only touches the atomics inside ``Counter``, ``Gauge`` and ``Histogram``. Label
/// sets are rendered once, when the series is created.
///
/// Series whose label values come from the network are asked for with `fold`: the names of
/// those labels. With a ``SeriesBudget`` set (``limitSeries(_:refusals:)``), such a series
/// is made only while the budget has room for its exposition bytes; past it the caller gets
/// the series with those labels set to ``overflowLabel``, so a scrape has a hard bound
/// whatever label sets clients cause.
public final class MetricsRegistry: @unchecked Sendable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }

    /// A family name registered again with another kind (a programming error: Prometheus
    /// rejects a scrape with two `# TYPE` lines for one name).
    public struct RegistrationError: Error, Equatable, CustomStringConvertible {
        public var name: String
        public var registered: Kind
        public var requested: Kind
        public var description: String {
            "metric family \(self.name) is a \(self.registered.rawValue), cannot register it as a \(self.requested.rawValue)"
        }
    }

    private struct Series {
        /// `{a="x",b="y"}`, escaped, or empty.
        var rendered: String
        /// The label pairs, for ``MetricsRegistry/remove(_:matching:)``.
        var labels: [(String, String)]
        var metric: AnyObject
    }

    private final class Family {
        let name: String
        let help: String
        let kind: Kind
        var series: [Series] = []
        var index: [String: Int] = [:]
        init(name: String, help: String, kind: Kind) {
            self.name = name
            self.help = help
            self.kind = kind
        }
    }

    /// The value of folded labels once the series budget is spent (and of the route cap's overflow route).
    public static let overflowLabel = "other"

    /// Bytes allowed for the value of a sample line (a count below 10^12); a histogram's
    /// `_sum` is allowed ``sumValueBytes``.
    static let sampleValueBytes = 12
    /// Bytes allowed for a histogram's `_sum` (a `Double` as Swift prints it).
    static let sumValueBytes = 24

    private let lock = NSLock()
    private var budget: SeriesBudget?
    private var refusals: Counter?
    private var families: [Family] = []
    private var byName: [String: Family] = [:]
    /// Bytes of the last scrape, to size the next one's buffer.
    private var lastRenderedBytes = 0
    /// Unix seconds, for exemplar timestamps (tests pass a fixed clock).
    let clock: @Sendable () -> Double
    /// Per-loop cell sets in every counter and histogram this registry makes (see
    /// ``MetricShard``): loops `0..<loopShards` record into cells of their own, later ones
    /// into the shared cells. Gauges have none.
    public let loopShards: Int

    /// The most loop shards a registry gives its series: each set costs 64 bytes per counter
    /// and 192 per histogram, so a series' cells grow with the loops only up to 17 sets (about
    /// 3.2 KiB per histogram). With 256 loops and no cap, 1,024 routes' series took 134 MB more
    /// RSS than shared atomics; loops past this share the atomic cells, as before shards.
    public static let maxLoopShards = 16

    /// A registry whose counters and histograms have per-loop cell sets for the first
    /// `loopShards` loops (at most ``maxLoopShards``; 0: none).
    public init(loopShards: Int = 0) {
        self.clock = { Date().timeIntervalSince1970 }
        self.loopShards = min(max(0, loopShards), Self.maxLoopShards)
    }

    /// A registry whose histograms stamp exemplars with `clock` (Unix seconds).
    public init(clock: @escaping @Sendable () -> Double, loopShards: Int = 0) {
        self.clock = clock
        self.loopShards = min(max(0, loopShards), Self.maxLoopShards)
    }

    /// Charges every series asked for with a `fold` to `budget` from now on; each label set
    /// refused increments `refusals`.
    public func limitSeries(_ budget: SeriesBudget, refusals: Counter) {
        self.lock.lock()
        defer { self.lock.unlock() }
        self.budget = budget
        self.refusals = refusals
    }

    /// The series budget as it stands (nil without one).
    public var seriesBudget: SeriesBudget? { self.lock.withLock { self.budget } }

    /// The counter of `labels`; `fold` names the labels that come from the network (see the type's notes).
    public func counter(_ name: String, help: String, labels: [(String, String)] = [], fold: [String] = []) -> Counter {
        self.series(name, help: help, kind: .counter, labels: labels, fold: fold, bucketCount: 0) {
            [loopShards] in Counter(loopShards: loopShards)
        }
    }

    public func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Gauge {
        self.series(name, help: help, kind: .gauge, labels: labels, fold: [], bucketCount: 0) { Gauge() }
    }

    /// The histogram of `labels`; `fold` names the labels that come from the network (see the type's notes).
    public func histogram(
        _ name: String, help: String, labels: [(String, String)] = [], buckets: [Double] = Histogram.defaultBuckets,
        fold: [String] = []
    ) -> Histogram {
        self.series(name, help: help, kind: .histogram, labels: labels, fold: fold, bucketCount: buckets.count) {
            [clock, loopShards] in
            Histogram(buckets: buckets, clock: clock, loopShards: loopShards)
        }
    }

    /// What one series adds to a Prometheus text scrape, in bytes, with values as long as
    /// ``sampleValueBytes`` (``sumValueBytes`` for a histogram's `_sum`): `name{labels} value`
    /// lines, and for a histogram one `_bucket` line per bucket and `+Inf` (each with its
    /// `le` label), `_sum` and `_count`.
    public static func exposedBytes(name: String, renderedLabels: String, kind: Kind, bucketCount: Int) -> Int {
        let labels = renderedLabels.utf8.count
        let name = name.utf8.count
        // name, labels, a space, the value, a newline.
        func line(_ suffix: Int, _ labels: Int, _ value: Int) -> Int { name + suffix + labels + 1 + value + 1 }
        guard kind == .histogram else { return line(0, labels, Self.sampleValueBytes) }
        // `_bucket{…,le="…"}`: the longest `le` the default buckets print is `0.00025` (7 bytes).
        let le = labels == 0 ? #"{le=""}"#.utf8.count + 7 : #",le="""#.utf8.count + 7
        return (bucketCount + 1) * line(7, labels + le, Self.sampleValueBytes)
            + line(4, labels, Self.sumValueBytes) + line(6, labels, Self.sampleValueBytes)
    }

    /// Declares a family with no series yet, so `# HELP`/`# TYPE` appear from the start.
    /// Declaring a name already registered with another kind stops the process.
    public func declare(_ name: String, help: String, kind: Kind) {
        self.lock.lock()
        defer { self.lock.unlock() }
        _ = Self.required(self.family(name, help: help, kind: kind))
    }

    /// Registers family `name` (or finds it); throws if it exists with another kind.
    public func register(_ name: String, help: String, kind: Kind) throws(RegistrationError) {
        self.lock.lock()
        defer { self.lock.unlock() }
        _ = try self.family(name, help: help, kind: kind).get()
    }

    /// Caller holds the lock.
    private func family(_ name: String, help: String, kind: Kind) -> Result<Family, RegistrationError> {
        if let f = self.byName[name] {
            guard f.kind == kind else {
                return .failure(RegistrationError(name: name, registered: f.kind, requested: kind))
            }
            return .success(f)
        }
        let f = Family(name: name, help: help, kind: kind)
        self.byName[name] = f
        self.families.append(f)
        return .success(f)
    }

    private static func required(_ result: Result<Family, RegistrationError>) -> Family {
        switch result {
        case .success(let f): return f
        case .failure(let error): preconditionFailure(error.description)
        }
    }

    /// The one get-or-create step of every series: under the lock, the series of `labels` in
    /// family `name`, made by `make` the first time; with `fold` and a budget that has no
    /// room for it, the series with the `fold` labels set to ``overflowLabel`` instead.
    private func series<M: AnyObject>(
        _ name: String, help: String, kind: Kind, labels: [(String, String)], fold: [String], bucketCount: Int,
        make: () -> M
    ) -> M {
        var labels = labels
        var rendered = Self.render(labels: labels)
        self.lock.lock()
        defer { self.lock.unlock() }
        let f = Self.required(self.family(name, help: help, kind: kind))
        if let i = f.index[rendered], let existing = f.series[i].metric as? M { return existing }
        if !fold.isEmpty, var budget = self.budget {
            let cost = Self.exposedBytes(name: name, renderedLabels: rendered, kind: kind, bucketCount: bucketCount)
            let admitted = budget.charge(cost)
            self.budget = budget
            if !admitted {
                self.refusals?.increment()
                labels = labels.map { fold.contains($0.0) ? ($0.0, Self.overflowLabel) : $0 }
                rendered = Self.render(labels: labels)
                if let i = f.index[rendered], let existing = f.series[i].metric as? M { return existing }
            }
        }
        let m = make()
        f.index[rendered] = f.series.count
        f.series.append(Series(rendered: rendered, labels: labels, metric: m))
        return m
    }

    /// Drops every series of family `name` that has each label of `matching` with exactly that
    /// value (for targets that are gone, so their last value does not linger).
    public func remove(_ name: String, matching: [(String, String)]) {
        self.lock.lock()
        defer { self.lock.unlock() }
        guard let f = self.byName[name] else { return }
        f.series.removeAll { series in
            matching.allSatisfy { wanted in series.labels.contains { $0.0 == wanted.0 && $0.1 == wanted.1 } }
        }
        f.index = [:]
        for (i, s) in f.series.enumerated() { f.index[s.rendered] = i }
    }

    public static func render(labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        var out = "{"
        for (i, (k, v)) in labels.enumerated() {
            if i > 0 { out += "," }
            out += k
            out += "=\""
            Self.escape(v, quotes: true, into: &out)
            out += "\""
        }
        return out + "}"
    }

    /// Escapes `\` and newline (and `"` with `quotes`), as the exposition formats require
    /// for label values (both formats) and HELP text (OpenMetrics also escapes `"` there).
    static func escape(_ text: String, quotes: Bool, into out: inout String) {
        for ch in text.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\"" where quotes: out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
    }

    /// The exposition text for every family: Prometheus text 0.0.4, or OpenMetrics 1.0
    /// (with exemplars and `# EOF`) when `openMetrics` is true.
    public func render(openMetrics: Bool = false) -> String {
        String(decoding: self.renderBytes(openMetrics: openMetrics), as: UTF8.self)
    }

    /// ``render(openMetrics:)`` as UTF-8 bytes, appended sample by sample with integers printed
    /// by hand: what the admin listener sends (no `String` interpolation per sample line).
    public func renderBytes(openMetrics: Bool = false) -> [UInt8] {
        self.lock.lock()
        let snapshot = self.families.map { ($0.name, $0.help, $0.kind, $0.series) }
        let expected = self.lastRenderedBytes
        self.lock.unlock()
        var out: [UInt8] = []
        out.reserveCapacity(max(4096, expected + expected / 8))
        for (name, help, kind, series) in snapshot {
            // OpenMetrics names a counter family without its `_total` suffix.
            let family = openMetrics && kind == .counter && name.hasSuffix("_total") ? String(name.dropLast(6)) : name
            out.append(contentsOf: "# HELP ".utf8)
            out.append(contentsOf: family.utf8)
            out.append(UInt8(ascii: " "))
            Self.appendEscaped(help, quotes: openMetrics, to: &out)
            out.append(contentsOf: "\n# TYPE ".utf8)
            out.append(contentsOf: family.utf8)
            out.append(UInt8(ascii: " "))
            out.append(contentsOf: kind.rawValue.utf8)
            out.append(UInt8(ascii: "\n"))
            for s in series {
                switch s.metric {
                case let c as Counter:
                    Self.appendSample(name: name, labels: s.rendered, value: c.value, to: &out)
                case let g as Gauge:
                    out.append(contentsOf: name.utf8)
                    out.append(contentsOf: s.rendered.utf8)
                    out.append(UInt8(ascii: " "))
                    if g.value < 0 { out.append(UInt8(ascii: "-")) }
                    Self.appendDecimal(g.value.magnitude, to: &out)
                    out.append(UInt8(ascii: "\n"))
                case let h as Histogram: h.render(name: name, labels: s.rendered, openMetrics: openMetrics, into: &out)
                default: break
                }
            }
        }
        if openMetrics { out.append(contentsOf: "# EOF\n".utf8) }
        self.lock.withLock { self.lastRenderedBytes = out.count }
        return out
    }

    /// ``escape(_:quotes:into:)`` into bytes.
    static func appendEscaped(_ text: String, quotes: Bool, to out: inout [UInt8]) {
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case UInt8(ascii: "\"") where quotes: out.append(contentsOf: "\\\"".utf8)
            case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
            default: out.append(byte)
            }
        }
    }

    /// `name{labels} value\n`.
    static func appendSample(name: String, labels: String, value: UInt64, to out: inout [UInt8]) {
        out.append(contentsOf: name.utf8)
        out.append(contentsOf: labels.utf8)
        out.append(UInt8(ascii: " "))
        Self.appendDecimal(value, to: &out)
        out.append(UInt8(ascii: "\n"))
    }

    /// `value` in decimal, as `\(value)` prints it.
    static func appendDecimal(_ value: UInt64, to out: inout [UInt8]) {
        guard value >= 10 else {
            out.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt64.max has 20 digits
        var n = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { d in
            while rest > 0 {
                d[n] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                n += 1
            }
            out.append(contentsOf: d[0..<n].reversed())
        }
    }
}
