import Foundation

/// Series looked up by a caller's own key, made on first use under a lock: the get-or-create
/// step for families whose label sets appear at run time (probe targets, results, sources).
///
/// Saves rendering the label set on every lookup; the registry still owns the series.
public final class SeriesCache<Key: Hashable, Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Key: Value] = [:]

    public init() {}

    /// The value for `key`, made by `make` (under the lock) the first time.
    public func value(for key: Key, orMake make: () -> Value) -> Value {
        self.lock.lock()
        defer { self.lock.unlock() }
        if let v = self.values[key] { return v }
        let v = make()
        self.values[key] = v
        return v
    }

    public func removeValue(forKey key: Key) {
        self.lock.lock()
        self.values.removeValue(forKey: key)
        self.lock.unlock()
    }

    public var count: Int { self.lock.withLock { self.values.count } }
}
