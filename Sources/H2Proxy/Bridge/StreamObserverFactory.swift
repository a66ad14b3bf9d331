import NIOCore

/// Makes the per-event-loop observer source, once per loop at start-up.
public protocol StreamObserverFactory: Sendable {
    func makeLoopObserverSource(for eventLoop: EventLoop) -> LoopObserverSource
}
