/// Decides which calls get spans: the caller's `sampled` flag when it sent a valid
/// `traceparent`, else `tracing.sample_ratio` of new traces.
///
/// Pure: the draw comes from the caller (a per-loop generator), so a test can replay it.
struct TraceSampler: Sendable, Equatable {
    /// Draws at or below this are sampled; `nil`: none are (ratio 0).
    let threshold: UInt64?

    /// - Parameter ratio: the share of new traces to sample, 0...1 (validated by the config).
    init(ratio: Double) {
        if ratio <= 0 {
            self.threshold = nil
        } else if ratio >= 1 {
            self.threshold = .max
        } else {
            // 2^64 · ratio, in range because ratio < 1.
            self.threshold = UInt64(ratio * 18_446_744_073_709_551_616.0)
        }
    }

    enum Decision: Equatable {
        /// Record a span; `parent` is the caller's context, `nil` for a new trace.
        case sample(parent: TraceParent?)
        /// Continue the caller's trace without a span: its `traceparent` goes on unchanged.
        case followUnsampled
        /// Start a new trace without a span (flags `00`).
        case startUnsampled
    }

    /// - Parameters:
    ///   - incoming: the request's `traceparent`, as found.
    ///   - draw: a uniformly random 64-bit number, used only when a new trace starts.
    func decide(_ incoming: TraceParent.Found, draw: UInt64) -> Decision {
        if case .valid(let parent) = incoming {
            return parent.sampled ? .sample(parent: parent) : .followUnsampled
        }
        guard let t = self.threshold, draw <= t else { return .startUnsampled }
        return .sample(parent: nil)
    }
}
