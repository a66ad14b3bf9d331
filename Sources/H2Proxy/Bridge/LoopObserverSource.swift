/// Makes an observer for each new stream on one event loop (or `nil` to not observe it).
/// Used only on its loop, so it can keep loop-local caches without locks.
public protocol LoopObserverSource: AnyObject {
    func makeObserver(for request: HeaderBlock) -> StreamObserver?
}
