import Atomics

/// A value that goes up and down (open connections, streams in flight).
public final class Gauge: Sendable {
    private let storage = ManagedAtomic<Int64>(0)

    public init() {}

    @inline(__always)
    public func increment(by amount: Int64 = 1) {
        self.storage.wrappingIncrement(by: amount, ordering: .relaxed)
    }

    @inline(__always)
    public func decrement(by amount: Int64 = 1) {
        self.storage.wrappingDecrement(by: amount, ordering: .relaxed)
    }

    public func set(_ value: Int64) { self.storage.store(value, ordering: .relaxed) }

    public var value: Int64 { self.storage.load(ordering: .relaxed) }
}
