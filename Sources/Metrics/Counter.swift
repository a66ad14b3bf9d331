import Atomics

/// A monotonically increasing count.
///
/// Recorded with a relaxed atomic add, or by an event loop into its own cells (see
/// ``MetricShard``) when the counter was made with loop shards; ``value`` sums them.
public final class Counter: @unchecked Sendable {
    private let counts: ShardedCounts

    /// A counter with `loopShards` per-loop cell sets besides the shared one (0: shared only).
    public init(loopShards: Int = 0) {
        self.counts = ShardedCounts(width: 1, loops: loopShards)
    }

    deinit { self.counts.deallocate() }

    /// Adds `amount` with an atomic add, from any thread.
    @inline(__always)
    public func increment(by amount: UInt64 = 1) {
        self.counts.add(amount, at: 0, shard: .shared)
    }

    /// Adds `amount` into `shard`'s cells: only the loop a loop shard names may call this with it.
    @inline(__always)
    public func increment(by amount: UInt64 = 1, shard: MetricShard) {
        self.counts.add(amount, at: 0, shard: shard)
    }

    public var value: UInt64 { self.counts.sum(at: 0) }
}
