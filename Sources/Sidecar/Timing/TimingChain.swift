import H2Proxy

/// The `insight-timing` entries of one response, innermost sidecar first, and the per-hop
/// segments they imply.
public struct TimingChain: Equatable, Sendable {
    public var entries: [TimingEntry]

    public init(entries: [TimingEntry]) {
        self.entries = entries
    }

    /// One hop's share of the end-to-end time, as seen by the sidecars: the proxy core's
    /// type, so that an observer hands segments to the maker of a call without a cast.
    public typealias Segment = StreamMeasurements.Segment

    /// segment(hop) = dur(hop) − (dur(next) + self(next)); the innermost is its whole `dur`.
    /// Outermost first. Negative results (measurement noise) are clamped to zero.
    public var segments: [Segment] {
        var out: [Segment] = []
        out.reserveCapacity(self.entries.count)
        for i in stride(from: self.entries.count - 1, through: 0, by: -1) {
            let e = self.entries[i]
            if i == 0 {
                out.append(Segment(hop: e.hop, next: "service", milliseconds: e.duration))
            } else {
                let inner = self.entries[i - 1]
                out.append(
                    Segment(
                        hop: e.hop, next: inner.hop,
                        milliseconds: max(0, e.duration - (inner.duration + inner.selfTime))))
            }
        }
        return out
    }
}
