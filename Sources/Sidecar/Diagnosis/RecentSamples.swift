import NIOCore

/// The last `capacity` samples of one event loop: a ring buffer written only on its loop, read
/// by copying on that loop (no locks on the stream path).
///
/// At most ``perSecond`` samples a second are kept: enough for percentiles over a window, and
/// it keeps the cost per stream flat under heavy traffic.
final class RecentSamples {
    let capacity: Int
    let perSecond: Int
    private var ring: [StreamSample] = []
    private var next = 0
    private var second = 0
    private var admitted = 0

    init(capacity: Int, perSecond: Int = 200) {
        self.capacity = capacity
        self.perSecond = perSecond
        self.ring.reserveCapacity(min(capacity, 1024))
    }

    /// Whether a sample ending at Unix second `second` is kept (the budget is per second).
    func admit(second: Int) -> Bool {
        if second != self.second {
            self.second = second
            self.admitted = 0
        }
        self.admitted += 1
        return self.admitted <= self.perSecond
    }

    func add(_ sample: StreamSample) {
        if self.ring.count < self.capacity {
            self.ring.append(sample)
        } else {
            self.ring[self.next] = sample
            self.next = (self.next + 1) % self.capacity
        }
    }

    func snapshot(since: Double) -> [StreamSample] {
        self.ring.filter { $0.time >= since }
    }
}
