import Atomics

/// A monotonically increasing count, recorded with a relaxed atomic add.
public final class Counter: Sendable {
    private let storage = ManagedAtomic<UInt64>(0)

    public init() {}

    @inline(__always)
    public func increment(by amount: UInt64 = 1) {
        self.storage.wrappingIncrement(by: amount, ordering: .relaxed)
    }

    public var value: UInt64 { self.storage.load(ordering: .relaxed) }
}
