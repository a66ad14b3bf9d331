/// What an observer measured on one stream, handed back with a ``LocalCall``'s result
/// (``LocalCallResult/measurements``) so the caller need not parse it again from the trailers.
///
/// The proxy core only carries it: the observer fills it in, the maker of the call reads it.
public struct StreamMeasurements: Equatable, Sendable {
    /// One hop's share of the end-to-end time of a call.
    public struct Segment: Equatable, Sendable {
        /// The hop the segment belongs to (the sidecar that fronts it).
        public var hop: String
        /// The next sidecar down the chain, or `service` for the innermost segment.
        public var next: String
        /// Milliseconds.
        public var milliseconds: Double

        public init(hop: String, next: String, milliseconds: Double) {
            self.hop = hop
            self.next = next
            self.milliseconds = milliseconds
        }
    }

    /// Per-hop segments of the response's complete timing chain, outermost first (empty if
    /// the chain was incomplete or never seen).
    public var segments: [Segment]

    public init(segments: [Segment]) {
        self.segments = segments
    }
}
