import NIOCore

/// Makes the per-event-loop observer source, once per loop at start-up.
public protocol StreamObserverFactory: Sendable {
    /// The source for `eventLoop`; its observers take any time they read from `clock`, the loop's.
    func makeLoopObserverSource(for eventLoop: EventLoop, clock: StreamClock) -> LoopObserverSource
}
