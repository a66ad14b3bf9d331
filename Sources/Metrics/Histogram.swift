import Atomics
import Foundation

/// A Prometheus histogram with fixed buckets; `observe` is a few relaxed atomic adds.
///
/// It may keep one exemplar per bucket (a correlation id with its value and time), replaced
/// at most once a second per bucket so that the per-histogram lock is rarely taken.
public final class Histogram: @unchecked Sendable {
    /// Seconds, from 100 µs (loopback hops, proxy overhead) to 30 s (cross-region calls, timeouts).
    public static let defaultBuckets: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
    ]

    public struct Exemplar: Sendable {
        public var labelName: String
        public var labelValue: String
        public var value: Double
        public var timestamp: Double
    }

    public let buckets: [Double]
    private let counts: [ManagedAtomic<UInt64>]
    private let sumNanos = ManagedAtomic<UInt64>(0)
    private let total = ManagedAtomic<UInt64>(0)
    private let exemplarSecond: [ManagedAtomic<Int64>]
    private var exemplars: [Exemplar?]
    private let exemplarLock = NSLock()
    /// Unix seconds, read only when an exemplar is offered.
    private let clock: @Sendable () -> Double
    /// The `le` label value of each bucket and `+Inf`, printed once.
    private let leLabels: [String]

    public init(
        buckets: [Double] = Histogram.defaultBuckets,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.clock = clock
        self.buckets = buckets.sorted()
        self.counts = (0...self.buckets.count).map { _ in ManagedAtomic<UInt64>(0) }
        self.exemplarSecond = (0...self.buckets.count).map { _ in ManagedAtomic<Int64>(0) }
        self.exemplars = Array(repeating: nil, count: self.buckets.count + 1)
        self.leLabels = self.buckets.map(Self.format) + ["+Inf"]
    }

    /// Records `seconds`; with `exemplar` (label name, value), may keep it for the bucket.
    public func observe(_ seconds: Double, exemplar: (String, String)? = nil) {
        let v = seconds.isFinite ? max(0, seconds) : 0
        var index = self.buckets.count
        for (i, upper) in self.buckets.enumerated() where v <= upper {
            index = i
            break
        }
        self.counts[index].wrappingIncrement(ordering: .relaxed)
        self.total.wrappingIncrement(ordering: .relaxed)
        self.sumNanos.wrappingIncrement(by: UInt64(min(v, 1e9) * 1e9), ordering: .relaxed)
        if let (name, value) = exemplar {
            let now = self.clock()
            let second = Int64(now)
            let last = self.exemplarSecond[index].load(ordering: .relaxed)
            if last != second,
                self.exemplarSecond[index].compareExchange(expected: last, desired: second, ordering: .relaxed)
                    .exchanged
            {
                self.exemplarLock.lock()
                self.exemplars[index] = Exemplar(labelName: name, labelValue: value, value: v, timestamp: now)
                self.exemplarLock.unlock()
            }
        }
    }

    public var count: UInt64 { self.total.load(ordering: .relaxed) }
    public var sum: Double { Double(self.sumNanos.load(ordering: .relaxed)) / 1e9 }

    func render(name: String, labels: String, openMetrics: Bool, into out: inout [UInt8]) {
        let inner = labels.isEmpty ? Substring() : labels.dropFirst().dropLast()
        var exemplars: [Exemplar?] = []
        if openMetrics {
            self.exemplarLock.lock()
            exemplars = self.exemplars
            self.exemplarLock.unlock()
        }
        var cumulative: UInt64 = 0
        for i in 0...self.buckets.count {
            cumulative += self.counts[i].load(ordering: .relaxed)
            out.append(contentsOf: name.utf8)
            out.append(contentsOf: "_bucket{".utf8)
            if !inner.isEmpty {
                out.append(contentsOf: inner.utf8)
                out.append(UInt8(ascii: ","))
            }
            out.append(contentsOf: "le=\"".utf8)
            out.append(contentsOf: self.leLabels[i].utf8)
            out.append(contentsOf: "\"} ".utf8)
            MetricsRegistry.appendDecimal(cumulative, to: &out)
            if openMetrics, let e = exemplars[i] { Self.append(e, to: &out) }
            out.append(UInt8(ascii: "\n"))
        }
        out.append(contentsOf: "\(name)_sum\(labels) \(self.sum)\n".utf8)
        MetricsRegistry.appendSample(name: name + "_count", labels: labels, value: cumulative, to: &out)
    }

    /// ` # {trace_id="…"} 0.05 1700000000.250`: the exemplar after a bucket's count, its
    /// timestamp in Unix seconds with milliseconds.
    private static func append(_ e: Exemplar, to out: inout [UInt8]) {
        out.append(contentsOf: " # {".utf8)
        out.append(contentsOf: e.labelName.utf8)
        out.append(contentsOf: "=\"".utf8)
        MetricsRegistry.appendEscaped(e.labelValue, quotes: true, to: &out)
        out.append(contentsOf: "\"} ".utf8)
        out.append(contentsOf: e.value.description.utf8)
        out.append(UInt8(ascii: " "))
        let millis = e.timestamp.isFinite ? UInt64(max(0, min(e.timestamp * 1000, 1e18)).rounded()) : 0
        MetricsRegistry.appendDecimal(millis / 1000, to: &out)
        out.append(UInt8(ascii: "."))
        let fraction = millis % 1000
        if fraction < 100 { out.append(UInt8(ascii: "0")) }
        if fraction < 10 { out.append(UInt8(ascii: "0")) }
        MetricsRegistry.appendDecimal(fraction, to: &out)
    }

    static func format(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(format: "%.1f", v) : "\(v)"
    }
}
