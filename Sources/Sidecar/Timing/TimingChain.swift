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
            out.append(Self.segment(self.entries[i], inner: i > 0 ? self.entries[i - 1] : nil))
        }
        return out
    }

    /// The `next` of the innermost hop's segment: the service behind it.
    static var serviceNext: String { "service" }

    /// The ``segments`` of the chain `inner + [outermost]`, handed to `body` one by one
    /// (outermost first) without building the chain or an array.
    static func forEachSegment(inner: [TimingEntry], outermost: TimingEntry, _ body: (Segment) -> Void) {
        body(Self.segment(outermost, inner: inner.last))
        for i in stride(from: inner.count - 1, through: 0, by: -1) {
            body(Self.segment(inner[i], inner: i > 0 ? inner[i - 1] : nil))
        }
    }

    /// The segment of entry `e`, whose next hop inwards is `inner` (`nil`: the service).
    private static func segment(_ e: TimingEntry, inner: TimingEntry?) -> Segment {
        guard let inner else { return Segment(hop: e.hop, next: Self.serviceNext, milliseconds: e.duration) }
        return Segment(
            hop: e.hop, next: inner.hop, milliseconds: max(0, e.duration - (inner.duration + inner.selfTime)))
    }
}
