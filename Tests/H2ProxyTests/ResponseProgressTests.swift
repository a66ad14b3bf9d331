import Testing

@testable import H2Proxy

/// The one reading of a response's HEADERS blocks and of when a refusal may be replayed,
/// shared by ``ProxyStream/StateMachine`` and ``LocalCall``.
@Suite struct ResponseProgressTests {
    typealias Action = ResponseProgress.HeadersAction

    /// Feeds HEADERS blocks in order; returns each one's action and the phase after it.
    static func feed(_ blocks: [(HeadersKind, endStream: Bool)], into p: inout ResponseProgress) -> [String] {
        blocks.map { kind, end in "\(p.headers(kind: kind, endStream: end)) → \(p.phase)" }
    }

    @Test func aWholeResponse() {
        var p = ResponseProgress()
        let steps = Self.feed(
            [
                (.informational, false), (.response, false), (.informational, false), (.trailers, true),
                (.trailers, true),
            ],
            into: &p)
        #expect(
            steps == [
                "interim → notStarted", "response(endStream: false) → started", "ignore → started",
                "trailers → ended", "ignore → ended",
            ])
        let dataEnded = p.dataEnded()
        #expect(!dataEnded)
    }

    @Test func trailersOnlyEndsAtOnce() {
        var p = ResponseProgress()
        let steps = Self.feed([(.response, true), (.response, true)], into: &p)
        #expect(steps == ["response(endStream: true) → ended", "ignore → ended"])
    }

    @Test func aSecondResponseBlockIsTakenAsTrailers() {
        var p = ResponseProgress()
        let steps = Self.feed([(.response, false), (.response, true)], into: &p)
        #expect(steps == ["response(endStream: false) → started", "trailers → ended"])
    }

    @Test(arguments: [HeadersKind.trailers, .request])
    func notAResponseIsAProtocolError(kind: HeadersKind) {
        var p = ResponseProgress()
        #expect(Self.feed([(kind, true)], into: &p) == ["protocolError → ended"])
    }

    @Test func dataEndEndsOnlyAStartedResponse() {
        var p = ResponseProgress()
        let beforeResponse = p.dataEnded()
        _ = p.headers(kind: .response, endStream: false)
        let afterResponse = p.dataEnded()
        let again = p.dataEnded()
        #expect([beforeResponse, afterResponse, again] == [false, true, false])
        #expect(p.phase == .ended)
    }

    @Test func onlyARefusalBeforeAnyResponseIsReplayedWithinTheLimit() {
        let refused = H2ErrorCode.refusedStream
        var p = ResponseProgress()
        #expect(p.mayReplay(closedWith: refused, retries: 0, maxRetries: 1))
        #expect(!p.mayReplay(closedWith: refused, retries: 1, maxRetries: 1))
        #expect(!p.mayReplay(closedWith: H2ErrorCode.cancel, retries: 0, maxRetries: 1))
        #expect(!p.mayReplay(closedWith: 0, retries: 0, maxRetries: 1))
        _ = p.headers(kind: .informational, endStream: false)
        #expect(p.mayReplay(closedWith: refused, retries: 0, maxRetries: 1))
        _ = p.headers(kind: .response, endStream: false)
        #expect(!p.mayReplay(closedWith: refused, retries: 0, maxRetries: 1))
        p.end()
        #expect(!p.mayReplay(closedWith: refused, retries: 0, maxRetries: 1))
    }
}
