import Dispatch
import Testing

@testable import Metrics

@Suite struct MetricShardTests {
    @Test func aCounterSumsItsLoopCellsAndItsSharedOnes() {
        let c = Counter(loopShards: 2)
        c.increment(shard: .loop(0))
        c.increment(by: 10, shard: .loop(1))
        c.increment(by: 100)
        // A loop past the counter's shards records into the shared cells (atomically).
        c.increment(by: 1000, shard: .loop(2))
        c.increment(by: 10_000, shard: .shared)
        #expect(c.value == 11_111)
        // Without loop shards, every shard is the shared one.
        let plain = Counter()
        plain.increment(shard: .loop(0))
        plain.increment(by: 2)
        #expect(plain.value == 3)
    }

    /// Cells grow with the loops only up to ``MetricsRegistry/maxLoopShards``: later loops add
    /// to the shared cells, and every count still sums.
    @Test func aRegistryGivesAtMostSixteenLoopsCellsOfTheirOwn() {
        let registry = MetricsRegistry(loopShards: 256)
        #expect(registry.loopShards == MetricsRegistry.maxLoopShards)
        #expect(MetricsRegistry(loopShards: -1).loopShards == 0)
        let c = registry.counter("z_total", help: "Z.")
        for loop in 0..<256 { c.increment(shard: .loop(loop)) }
        #expect(c.value == 256)
    }

    /// Each loop's thread the only writer of its cells, a third thread adding to the shared
    /// ones at the same time, and a reader summing meanwhile: no count is lost (and under
    /// `make sanitize` TSan sees no race).
    @Test func concurrentLoopsAndSharedWritersLoseNoCount() {
        let c = Counter(loopShards: 2)
        let h = Histogram(buckets: [0.001, 1], loopShards: 2)
        let perWriter = 50_000
        DispatchQueue.concurrentPerform(iterations: 4) { writer in
            if writer == 3 {
                var last: UInt64 = 0
                for _ in 0..<1000 {
                    let v = c.value
                    #expect(v >= last)
                    last = v
                }
                return
            }
            let shard: MetricShard = writer == 2 ? .shared : .loop(writer)
            for i in 0..<perWriter {
                c.increment(shard: shard)
                h.observe(i % 2 == 0 ? 0.0005 : 0.5, traceID: nil, unixSeconds: 0, shard: shard)
            }
        }
        #expect(c.value == UInt64(3 * perWriter))
        #expect(h.count == UInt64(3 * perWriter))
        let text = { () -> String in
            var out: [UInt8] = []
            h.render(name: "x", labels: "", openMetrics: false, into: &out)
            return String(decoding: out, as: UTF8.self)
        }()
        #expect(text.contains("x_bucket{le=\"0.001\"} \(3 * perWriter / 2)\n"))
        #expect(text.contains("x_bucket{le=\"+Inf\"} \(3 * perWriter)\n"))
    }

    /// The same observations spread over loop shards, the shared cells and a loop past the
    /// histogram's shards render exactly as into a histogram without shards: every bucket,
    /// `_sum` and `_count`.
    @Test func aShardedHistogramRendersAsAnUnshardedOne() {
        let registry = MetricsRegistry(loopShards: 3)
        let plainRegistry = MetricsRegistry()
        let sharded = registry.histogram("x_seconds", help: "X.", labels: [("a", "b")])
        let plain = plainRegistry.histogram("x_seconds", help: "X.", labels: [("a", "b")])
        let shards: [MetricShard] = [.loop(0), .loop(1), .loop(2), .shared, .loop(9)]
        // Values across every default bucket and past the last, with zero, a negative and a NaN.
        var values: [Double] = [0, -1, .nan, 31, 1e12]
        for i in 0..<2000 { values.append(Double((i * 7919) % 40_000) * 0.001 * Double(i % 3 + 1) / 3) }
        for (i, v) in values.enumerated() {
            sharded.observe(v, traceID: nil, unixSeconds: 0, shard: shards[i % shards.count])
            plain.observe(v, traceID: nil, unixSeconds: 0)
        }
        #expect(registry.render(openMetrics: false) == plainRegistry.render(openMetrics: false))
        #expect(sharded.count == UInt64(values.count))
        let counter = registry.counter("y_total", help: "Y.")
        counter.increment(shard: .loop(2))
        #expect(registry.render(openMetrics: false).contains("y_total 1\n"))
    }
}
