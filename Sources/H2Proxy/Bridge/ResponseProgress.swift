/// How far a response from the upstream has come, and what each HEADERS block means for it.
///
/// The one reading of a response's HEADERS blocks (1xx, final, trailers) and of when a
/// REFUSED_STREAM may be replayed, shared by the bridge (``ProxyStream/StateMachine``) and the
/// calls this sidecar makes itself (``LocalCall``). Pure: no session, no clock.
struct ResponseProgress: Equatable {
    enum Phase: Equatable {
        case notStarted
        /// Final response HEADERS seen; DATA may follow.
        case started
        /// The response ended (or the proxy wrote a fault or a reset in its place).
        case ended
    }

    /// What a HEADERS block from the upstream is.
    enum HeadersAction: Equatable {
        /// A 1xx response before the final one.
        case interim
        /// The final response headers (END_STREAM: a Trailers-Only response, which also ends it).
        case response(endStream: Bool)
        /// The response's trailers: the response ends with them.
        case trailers
        /// Not a response (a request, or trailers before any response): a protocol error.
        case protocolError
        /// After the response ended, or a 1xx after the final headers: nothing to do.
        case ignore
    }

    private(set) var phase: Phase = .notStarted

    /// A HEADERS block arrived from the upstream (`kind` as the session classified it).
    mutating func headers(kind: HeadersKind, endStream: Bool) -> HeadersAction {
        guard self.phase != .ended else { return .ignore }
        switch kind {
        case .informational:
            return self.phase == .notStarted ? .interim : .ignore
        case .response where self.phase == .notStarted:
            self.phase = endStream ? .ended : .started
            return .response(endStream: endStream)
        case .trailers where self.phase == .started, .response:
            // A second block with a `:status` after the response started ends it, like trailers.
            self.phase = .ended
            return .trailers
        case .trailers, .request:
            self.phase = .ended
            return .protocolError
        }
    }

    /// DATA with END_STREAM arrived. Returns whether it ends a started response.
    mutating func dataEnded() -> Bool {
        guard self.phase == .started else { return false }
        self.phase = .ended
        return true
    }

    /// The proxy ended the response itself (a fault or a reset written in its place).
    mutating func end() {
        self.phase = .ended
    }

    /// Whether a stream the upstream closed with `errorCode` may be replayed on another upstream
    /// stream: only REFUSED_STREAM (the upstream did not process it, RFC 9113 §8.7), only before
    /// any response, and at most `maxRetries` times.
    func mayReplay(closedWith errorCode: UInt32, retries: Int, maxRetries: Int) -> Bool {
        errorCode == H2ErrorCode.refusedStream && self.phase == .notStarted && retries < maxRetries
    }
}
