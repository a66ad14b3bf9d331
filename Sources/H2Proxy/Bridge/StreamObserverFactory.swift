import Metrics
import NIOCore

/// Makes the per-event-loop observer source, once per loop at start-up.
public protocol StreamObserverFactory: Sendable {
    /// The source for `eventLoop`; its observers take any time they read from `clock`, the loop's.
    func makeLoopObserverSource(for eventLoop: EventLoop, clock: StreamClock) -> LoopObserverSource
    /// The same, for the loop that records its metrics with `shard` (its own cells in the
    /// registry's counters and histograms, see ``MetricShard``). By default the shard is not used.
    func makeLoopObserverSource(for eventLoop: EventLoop, clock: StreamClock, shard: MetricShard) -> LoopObserverSource
}

extension StreamObserverFactory {
    public func makeLoopObserverSource(
        for eventLoop: EventLoop, clock: StreamClock, shard: MetricShard
    ) -> LoopObserverSource {
        self.makeLoopObserverSource(for: eventLoop, clock: clock)
    }
}
