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
