import H2Proxy
import Metrics
import NIOCore

/// Makes ``HopTimingObserver``s for the sidecar; shared by every event loop.
struct HopTimingObserverFactory: StreamObserverFactory {
    let options: TimingOptions
    let metrics: TrafficMetrics
    let accessLog: AccessLog?
    /// Each loop's ``LoopTracing`` is made from this; `nil`: tracing off.
    var tracing: (@Sendable (EventLoop) -> LoopTracing)? = nil
    /// Every loop's source, for the status page and the diagnosis to read recent samples.
    let sources = ObserverSources()

    func makeLoopObserverSource(for eventLoop: EventLoop, clock: StreamClock, shard: MetricShard) -> LoopObserverSource
    {
        let source = HopTimingObserverSource(
            options: self.options, metrics: self.metrics, accessLog: self.accessLog, clock: clock,
            tracing: self.tracing?(eventLoop), shard: shard)
        self.sources.add(source, on: eventLoop)
        return source
    }
}
