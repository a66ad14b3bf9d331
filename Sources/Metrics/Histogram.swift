import Atomics

/// A Prometheus histogram with fixed buckets; `observe` is a few relaxed atomic adds.
public final class Histogram: Sendable {
    /// Seconds, from 100 µs to 30 s: wide enough for a proxy's own overhead and a WAN hop.
    public static let defaultBuckets: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
    ]

    public let buckets: [Double]
    private let counts: [ManagedAtomic<UInt64>]
    private let sumMicros = ManagedAtomic<UInt64>(0)
    private let total = ManagedAtomic<UInt64>(0)

    public init(buckets: [Double] = Histogram.defaultBuckets) {
        self.buckets = buckets.sorted()
        self.counts = self.buckets.map { _ in ManagedAtomic<UInt64>(0) }
    }

    public func observe(_ seconds: Double) {
        let v = max(0, seconds)
        for (i, upper) in self.buckets.enumerated() where v <= upper {
            self.counts[i].wrappingIncrement(ordering: .relaxed)
            break
        }
        self.total.wrappingIncrement(ordering: .relaxed)
        self.sumMicros.wrappingIncrement(by: UInt64(v * 1_000_000), ordering: .relaxed)
    }

    public var count: UInt64 { self.total.load(ordering: .relaxed) }
    public var sum: Double { Double(self.sumMicros.load(ordering: .relaxed)) / 1_000_000 }

    func render(name: String, labels: String, into out: inout String) {
        let inner = labels.isEmpty ? "" : String(labels.dropFirst().dropLast()) + ","
        var cumulative: UInt64 = 0
        for (i, upper) in self.buckets.enumerated() {
            cumulative += self.counts[i].load(ordering: .relaxed)
            out += "\(name)_bucket{\(inner)le=\"\(upper)\"} \(cumulative)\n"
        }
        out += "\(name)_bucket{\(inner)le=\"+Inf\"} \(self.count)\n"
        out += "\(name)_sum\(labels) \(self.sum)\n"
        out += "\(name)_count\(labels) \(self.count)\n"
    }
}
