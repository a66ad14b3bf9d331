/// How many bytes of exposition text the series made at run time from label values that come
/// from the network (service, method, peer hop names) may add to a scrape.
///
/// Each such series is charged what it adds to `/metrics` when it is made (see
/// ``MetricsRegistry/exposedBytes(name:renderedLabels:kind:bucketCount:)``); once the
/// budget is spent, a new label set gets the family's overflow series instead, whose
/// network-derived labels are all ``MetricsRegistry/overflowLabel``. Series are never
/// removed, so what was charged is never given back.
public struct SeriesBudget: Sendable, Equatable {
    /// Bytes of exposition text the budgeted series may take in all.
    public let limit: Int
    /// Bytes charged so far.
    public private(set) var spent = 0
    /// Label sets refused a series of their own.
    public private(set) var refused = 0

    public init(limit: Int) {
        self.limit = max(0, limit)
    }

    /// Charges `cost` bytes if they fit; false (and nothing charged) if they do not.
    public mutating func charge(_ cost: Int) -> Bool {
        guard cost <= self.limit - self.spent else {
            self.refused += 1
            return false
        }
        self.spent += cost
        return true
    }
}
