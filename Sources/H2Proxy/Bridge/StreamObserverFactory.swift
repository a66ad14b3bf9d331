import Metrics
import NIOCore

/// Makes the per-event-loop observer source, once per loop at start-up.
public protocol StreamObserverFactory: Sendable {
    /// The source for `eventLoop`; its observers take any time they read from `clock`, the loop's,
    /// and record the loop's metrics with `shard` (its own cells in the registry's counters and
    /// histograms, see ``MetricShard``; only that loop may use it).
    func makeLoopObserverSource(for eventLoop: EventLoop, clock: StreamClock, shard: MetricShard) -> LoopObserverSource
}
