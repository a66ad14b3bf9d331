import NIOCore

/// One finished stream as the status page and the diagnosis see it.
struct StreamSample: Sendable {
    /// Unix seconds when the stream ended.
    var time: Double
    var service: String
    var method: String
    var isProbe: Bool
    /// For probes: the target's name.
    var target: String?
    var code: String
    /// This sidecar's `dur` and `self`, in milliseconds (nil if the response never ended).
    var duration: Double?
    var selfTime: Double?
    /// Outermost first; empty when no complete chain was seen.
    var segments: [TimingChain.Segment]
    /// For failures: the message, starting with the hop that saw the failure first.
    var failure: String?

    /// Which path the sample belongs to: the route, and for probes also the target.
    var pathKey: String { "\(self.service)\u{0}\(self.method)\u{0}\(self.isProbe)\u{0}\(self.target ?? "")" }
}

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
