import Atomics
import Foundation

/// A Prometheus histogram with fixed buckets; `observe` is two relaxed atomic adds, or with a
/// loop shard (``MetricShard``) two single-writer adds into the loop's own cells.
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
    /// Per set: a count for each bucket and `+Inf`, then the sum in nanoseconds. Raw cells
    /// (freed in `deinit`) rather than `ManagedAtomic` objects: recording retains nothing.
    private let counts: ShardedCounts
    /// The index of the sum in ``counts``.
    private let sumIndex: Int
    private let exemplarSecond: [UnsafeAtomic<Int64>]
    private var exemplars: [Exemplar?]
    private let exemplarLock = NSLock()
    /// Unix seconds, read only when an exemplar is offered.
    private let clock: @Sendable () -> Double
    /// The `le` label value of each bucket and `+Inf`, printed once.
    private let leLabels: [String]

    /// A histogram with `loopShards` per-loop cell sets besides the shared one (0: shared only).
    public init(
        buckets: [Double] = Histogram.defaultBuckets,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 },
        loopShards: Int = 0
    ) {
        self.clock = clock
        self.buckets = buckets.sorted()
        self.sumIndex = self.buckets.count + 1
        self.counts = ShardedCounts(width: self.buckets.count + 2, loops: loopShards)
        self.exemplarSecond = (0...self.buckets.count).map { _ in UnsafeAtomic<Int64>.create(0) }
        self.exemplars = Array(repeating: nil, count: self.buckets.count + 1)
        self.leLabels = self.buckets.map(Self.format) + ["+Inf"]
    }

    deinit {
        self.counts.deallocate()
        for s in self.exemplarSecond { s.destroy() }
    }

    /// Records `seconds`; with `exemplar` (label name, value), may keep it for the bucket,
    /// stamped with the histogram's clock.
    public func observe(_ seconds: Double, exemplar: (String, String)? = nil) {
        let (index, v) = self.record(seconds, shard: .shared)
        guard let (name, value) = exemplar else { return }
        let now = self.clock()
        if self.claimExemplar(index, second: Int64(now)) {
            self.keep(Exemplar(labelName: name, labelValue: value, value: v, timestamp: now), at: index)
        }
    }

    /// Records `seconds`; with `traceID`, may keep it as the bucket's `trace_id` exemplar,
    /// stamped `unixSeconds`: a time the caller already read (the stream's end), so that the
    /// data path reads no clock here and builds the id's text only for an exemplar it keeps.
    /// `shard`: the recording loop's own cells (only that loop may pass it), or `.shared`.
    public func observe(_ seconds: Double, traceID: TraceID?, unixSeconds: Double, shard: MetricShard = .shared) {
        let (index, v) = self.record(seconds, shard: shard)
        guard let traceID, self.claimExemplar(index, second: Int64(unixSeconds)) else { return }
        self.keep(Exemplar(labelName: "trace_id", labelValue: traceID.hex, value: v, timestamp: unixSeconds), at: index)
    }

    /// Counts `seconds` (clamped to ≥ 0, non-finite as 0) in its bucket; returns the bucket
    /// index and the value counted.
    @inline(__always)
    private func record(_ seconds: Double, shard: MetricShard) -> (Int, Double) {
        let v = seconds.isFinite ? max(0, seconds) : 0
        let index = self.buckets.withUnsafeBufferPointer { buckets in
            var i = 0
            while i < buckets.count && v > buckets[i] { i += 1 }
            return i
        }
        self.counts.add(1, at: index, shard: shard)
        self.counts.add(UInt64(min(v, 1e9) * 1e9), at: self.sumIndex, shard: shard)
        return (index, v)
    }

    /// Whether this call may replace bucket `index`'s exemplar: the first offer in each Unix
    /// second `second` wins, so the lock is taken at most once a second per bucket.
    @inline(__always)
    private func claimExemplar(_ index: Int, second: Int64) -> Bool {
        let last = self.exemplarSecond[index].load(ordering: .relaxed)
        return last != second
            && self.exemplarSecond[index].compareExchange(expected: last, desired: second, ordering: .relaxed).exchanged
    }

    private func keep(_ exemplar: Exemplar, at index: Int) {
        self.exemplarLock.lock()
        self.exemplars[index] = exemplar
        self.exemplarLock.unlock()
    }

    /// Observations so far: the sum of the bucket counts (as `_count` is rendered), so that
    /// recording adds to no total of its own.
    public var count: UInt64 { (0...self.buckets.count).reduce(0) { $0 &+ self.counts.sum(at: $1) } }
    public var sum: Double { Double(self.counts.sum(at: self.sumIndex)) / 1e9 }

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
            cumulative &+= self.counts.sum(at: i)
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
