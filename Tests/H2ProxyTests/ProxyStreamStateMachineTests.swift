import Foundation
import NIOCore
import Testing

@testable import H2Proxy

/// Seeded random interleavings of both sides' events through ``ProxyStream/StateMachine``,
/// against a model of what the two nghttp2 sessions would do, with invariants checked after
/// every step. Sequence N uses seed N (`SeededRandom`, the same on every platform); a failure
/// prints its seed and every event. Replay one with
/// `INSIGHT_BRIDGE_SEED=N swift test --filter randomInterleavingsKeepTheInvariants`.
@Suite struct ProxyStreamStateMachineTests {
    static let sequences = 20_000

    /// Seeds 1...20,000, or only `INSIGHT_BRIDGE_SEED` when it is set.
    static var seeds: ClosedRange<UInt64> {
        if let text = ProcessInfo.processInfo.environment["INSIGHT_BRIDGE_SEED"], let seed = UInt64(text) {
            return seed...seed
        }
        return 1...UInt64(Self.sequences)
    }

    @Test func randomInterleavingsKeepTheInvariants() {
        var stats = BridgeModel.Stats()
        let seeds = Self.seeds
        for seed in seeds {
            var model = BridgeModel(seed: seed)
            model.run(steps: 80)
            stats.add(model)
            if !model.failures.isEmpty {
                Issue.record(
                    "seed \(seed): \(model.failures.joined(separator: "; "))\n\(model.log.joined(separator: "\n"))")
                return
            }
        }
        // The generator must reach every way a stream can end, or it tests little.
        guard seeds.count > 1 else { return }
        #expect(stats.retries > 0)
        #expect(stats.faults > 0)
        #expect(stats.cleanEnds > 0)
        #expect(stats.downstreamResets > 0)
        #expect(stats.upstreamResets > 0)
        #expect(stats.refusedToClient > 0)
    }

    @Test func earlyResponseThenClientDoneResetsTheUpstream() {
        var m = Self.machine(endStream: false)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 1)
        #expect(m.requestData(BackToBack.bytes(50_000)) == .forward)
        #expect(!m.requestEnd(trailers: nil) == false)
        #expect(m.responseHeaders(kind: .response, endStream: true) == .response(endStream: true))
        // The upstream read none of the body; the client got its answer and closed cleanly.
        let e = m.downstreamClosed(errorCode: 0, connectionLost: false)
        #expect(e.resetUpstream == H2ErrorCode.cancel)
        #expect(e.consumeDownstream == 50_000)
        #expect(e.finished == nil)
        let closed = m.upstreamClosed(errorCode: H2ErrorCode.cancel)
        #expect(closed.finished == .completed)
        #expect(closed.resetReceived == nil)
        #expect(m.isClosed)
    }

    @Test func refusedWithABodyTooLargeToReplayIsRefusedToTheClient() {
        var m = Self.machine(endStream: false)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 1)
        _ = m.requestData(BackToBack.bytes(70_000))
        #expect(m.requestDataWritten(70_000) == 70_000)
        let e = m.upstreamClosed(errorCode: H2ErrorCode.refusedStream)
        #expect(!e.retry)
        #expect(e.resetDownstream == H2ErrorCode.refusedStream)
        #expect(e.fault == nil)
    }

    @Test func refusedWithASmallBodyIsReplayedWithoutReleasingTwice() {
        var m = Self.machine(endStream: false)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 1)
        _ = m.requestData(BackToBack.bytes(1000))
        #expect(m.requestDataWritten(1000) == 1000)
        let e = m.upstreamClosed(errorCode: H2ErrorCode.refusedStream)
        #expect(e.retry)
        guard case .submit = m.attach() else {
            Issue.record("no resubmit")
            return
        }
        let opened = m.upstreamOpened(streamID: 3)
        #expect(opened?.pending.reduce(0) { $0 + $1.readableBytes } == 1000)
        // The replayed bytes gave their window back the first time.
        #expect(m.requestDataWritten(1000) == 0)
        #expect(m.replayCredit == 0)
    }

    @Test func retriesExhaustedAnswerUnavailable() {
        var m = Self.machine(endStream: true, maxRetries: 1)
        for id in [Int32(1), 3] {
            _ = m.attach()
            _ = m.upstreamOpened(streamID: id)
            let e = m.upstreamClosed(errorCode: H2ErrorCode.refusedStream)
            if id == 3 {
                #expect(!e.retry)
                #expect(e.fault == .grpcTrailersOnly("upstream refused the stream"))
            }
        }
    }

    @Test func waitTimeoutIs503ForHTTPAndUnavailableForGRPC() {
        var http = Self.machine(endStream: true, grpc: false)
        #expect(http.upstreamUnavailable("no slot", status: 503).fault == .http(status: 503, "no slot"))
        var grpc = Self.machine(endStream: true)
        #expect(grpc.upstreamUnavailable("no slot", status: 503).fault == .grpcTrailersOnly("no slot"))
        #expect(
            grpc.downstreamClosed(errorCode: 0, connectionLost: false).finished
                == .upstreamUnavailable("no slot", status: 503))
    }

    @Test func upstreamLostAfterTheResponseStartedEndsWithTrailers() {
        var m = Self.machine(endStream: true)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 1)
        _ = m.responseHeaders(kind: .response, endStream: false)
        #expect(m.responseData(BackToBack.bytes(10)) == .forward)
        let e = m.upstreamConnectionLost("gone")
        #expect(e.fault == .grpcTrailers("gone"))
        // The connection is gone: its window is nobody's to give back.
        #expect(m.responseDataWritten(10) == 0)
        #expect(m.downstreamClosed(errorCode: 0, connectionLost: false).finished == .upstreamUnavailable("gone"))
    }

    /// A connection lost before the request HEADERS left the proxy: the upstream never saw the
    /// request, so it is replayed like a refused one, up to `maxRetries` times.
    @Test func lostBeforeTheRequestHeadersLeftIsReplayed() {
        var m = Self.machine(endStream: true)
        for attempt in 0...2 {
            guard case .submit = m.attach() else {
                Issue.record("no submit on attempt \(attempt)")
                return
            }
            _ = m.upstreamOpened(streamID: Int32(2 * attempt + 1))
            let e = m.upstreamConnectionLost("gone")
            if attempt < 2 {
                #expect(e.retry)
                #expect(e.fault == nil)
                #expect(m.state == .waitingForUpstream)
            } else {
                #expect(!e.retry)
                #expect(e.fault == .grpcTrailersOnly("gone"))
            }
        }
        #expect(m.retries == 2)
    }

    /// Once the HEADERS left, the upstream may have acted on the request: no replay.
    @Test func lostAfterTheRequestHeadersLeftIsNotReplayed() {
        var m = Self.machine(endStream: true)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 1)
        m.requestHeadersWritten()
        let e = m.upstreamConnectionLost("gone")
        #expect(!e.retry)
        #expect(e.fault == .grpcTrailersOnly("gone"))
    }

    /// Above a GOAWAY's last stream ID the upstream says it did not process the stream.
    @Test func lostAboveAGoAwaysLastStreamIsReplayedEvenAfterItsHeadersLeft() {
        var m = Self.machine(endStream: false)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 5)
        m.requestHeadersWritten()
        #expect(m.requestData(BackToBack.bytes(100)) == .forward)
        #expect(m.requestDataWritten(100) == 100)
        let e = m.upstreamConnectionLost("gone", .aboveGoAway)
        #expect(e.retry)
        _ = m.attach()
        let opened = m.upstreamOpened(streamID: 1)
        #expect(opened?.pending.reduce(0) { $0 + $1.readableBytes } == 100)
        #expect(!m.requestHeadersSent, "a new attempt starts unsent")
    }

    /// At shutdown the proxy gives connections up: nothing is replayed.
    @Test func abandonedIsNeverReplayed() {
        var m = Self.machine(endStream: true)
        _ = m.attach()
        _ = m.upstreamOpened(streamID: 1)
        let e = m.upstreamConnectionLost("shutting down", .abandoned)
        #expect(!e.retry)
        #expect(e.fault == .grpcTrailersOnly("shutting down"))
    }

    static func machine(endStream: Bool, grpc: Bool = true, maxRetries: Int = 2) -> ProxyStream.StateMachine {
        ProxyStream.StateMachine(
            request: BackToBack.request(grpc: grpc), endStream: endStream, isGRPC: grpc, maxRetries: maxRetries)
    }
}

/// One stream's state machine plus a model of the two sessions around it.
struct BridgeModel {
    struct Stats {
        var retries = 0
        var faults = 0
        var cleanEnds = 0
        var downstreamResets = 0
        var upstreamResets = 0
        var refusedToClient = 0

        mutating func add(_ m: BridgeModel) {
            self.retries += m.retries
            self.faults += m.faults
            if m.endReason == .completed { self.cleanEnds += 1 }
            if case .downstreamReset = m.endReason { self.downstreamResets += 1 }
            if case .upstreamReset = m.endReason { self.upstreamResets += 1 }
            self.refusedToClient += m.refusedToClient
        }
    }

    var rng: SeededRandom
    var machine: ProxyStream.StateMachine
    var log: [String] = []
    var failures: [String] = []

    // The pool.
    var inPool = true
    // The client session (downstream).
    var downstreamAlive = true
    var downstreamStreamOpen = true
    var clientEndedRequest: Bool
    var downstreamClosePending: UInt32?
    var responseQueued = 0
    var responseEndQueued = false
    var responseHeadersSent = false
    var requestReceived = 0
    var requestReleased = 0
    /// Request bytes written upstream in this attempt, the most written in any attempt, and
    /// the window given back for written bytes: never more than was written at least once.
    var attemptOffset = 0
    var maxWrittenOffset = 0
    var releasedForWrites = 0
    // The upstream session of the current attempt.
    var upstreamAttached = false
    /// Whether the upstream session wrote the current attempt's request HEADERS.
    var headersWritten = false
    var upstreamAlive = false
    var upstreamStreamOpen = false
    var upstreamClosePending: UInt32?
    var requestQueued = 0
    var requestEndQueued = false
    var upstreamResponded = false
    var upstreamEndedResponse = false
    var responseReceived = 0
    var responseReleased = 0
    var nextUpstreamID: Int32 = 1
    // Outcomes.
    var finishedCount = 0
    var endReason: StreamEndReason?
    var retries = 0
    var faults = 0
    var refusedToClient = 0
    var active = 1

    static let codes: [UInt32] = [
        0, H2ErrorCode.cancel, H2ErrorCode.refusedStream, H2ErrorCode.internalError, H2ErrorCode.protocolError,
        H2ErrorCode.enhanceYourCalm,
    ]

    init(seed: UInt64) {
        self.rng = SeededRandom(seed: seed)
        let grpc = Bool.random(using: &self.rng)
        let end = Int.random(in: 0..<4, using: &self.rng) == 0
        self.clientEndedRequest = end
        self.machine = ProxyStream.StateMachine(
            request: BackToBack.request(grpc: grpc), endStream: end, isGRPC: grpc,
            maxRetries: Int.random(in: 0...2, using: &self.rng))
    }

    mutating func fail(_ message: String) { self.failures.append(message) }

    mutating func run(steps: Int) {
        for _ in 0..<steps {
            guard self.failures.isEmpty, self.finishedCount == 0 else { break }
            self.step()
            self.checkInvariants()
        }
        self.closeEverything()
        self.checkInvariants()
        if self.finishedCount != 1 {
            self.fail("stream ended \(self.finishedCount) times (state \(self.machine.state))")
        }
        if self.active != 0 { self.fail("active streams \(self.active)") }
        if !self.machine.isClosed { self.fail("machine not closed: \(self.machine.state)") }
        if self.downstreamAlive && self.requestReleased != self.requestReceived {
            self.fail("client window: received \(self.requestReceived), released \(self.requestReleased)")
        }
    }

    // MARK: Events

    enum Choice {
        case attach, poolFails, headersWritten, clientData, clientEnd
        case upstreamWrites, upstreamHeaders, upstreamData, upstreamEnd
        case upstreamReset, downstreamWrites, clientResetOrClose
        case upstreamClose(UInt32)
        case downstreamClose(UInt32)
        case upstreamLost, downstreamLost
    }

    mutating func step() {
        var choices: [Choice] = []
        if self.inPool && self.machine.state == .waitingForUpstream {
            choices += [.attach, .attach, .poolFails]
        }
        if self.downstreamStreamOpen && !self.clientEndedRequest && self.downstreamClosePending == nil {
            choices += [.clientData, .clientData, .clientEnd]
        }
        if self.upstreamStreamOpen && !self.headersWritten { choices.append(.headersWritten) }
        if self.requestQueued > 0 && self.upstreamStreamOpen && self.upstreamClosePending == nil {
            choices += [.upstreamWrites, .upstreamWrites]
        }
        if self.upstreamStreamOpen && self.upstreamClosePending == nil && !self.upstreamEndedResponse {
            choices += [.upstreamHeaders, .upstreamReset]
            if self.upstreamResponded { choices += [.upstreamData, .upstreamData, .upstreamEnd] }
        }
        if self.responseQueued > 0 && self.downstreamStreamOpen && self.downstreamClosePending == nil {
            choices += [.downstreamWrites, .downstreamWrites]
        }
        if self.downstreamStreamOpen { choices.append(.clientResetOrClose) }
        if let code = self.upstreamClosePending { choices += [.upstreamClose(code), .upstreamClose(code)] }
        if let code = self.downstreamClosePending { choices += [.downstreamClose(code), .downstreamClose(code)] }
        if self.upstreamAlive { choices.append(.upstreamLost) }
        if self.downstreamAlive && Int.random(in: 0..<4, using: &self.rng) == 0 { choices.append(.downstreamLost) }
        if self.upstreamStreamOpen && self.upstreamClosePending == nil && self.upstreamEndedResponse
            && self.requestEndQueued && self.requestQueued == 0
        {
            choices += [.upstreamClose(0), .upstreamClose(0)]
        }
        guard !choices.isEmpty else { return }
        switch choices[Int.random(in: 0..<choices.count, using: &self.rng)] {
        case .attach: self.attach()
        case .poolFails: self.poolFails(status: Bool.random(using: &self.rng) ? 502 : 503)
        case .headersWritten:
            self.log.append("upstream session wrote the request HEADERS")
            self.headersWritten = true
            self.machine.requestHeadersWritten()
        case .clientData: self.clientSendsData()
        case .clientEnd: self.clientEndsRequest()
        case .upstreamWrites: self.upstreamWritesRequest()
        case .upstreamHeaders: self.upstreamSendsHeaders()
        case .upstreamData: self.upstreamSendsData()
        case .upstreamEnd: self.upstreamEndsWithData()
        case .upstreamReset: self.upstreamResets()
        case .downstreamWrites: self.downstreamWritesResponse()
        case .clientResetOrClose: self.clientResetsOrCloses()
        case .upstreamClose(let code): self.deliverUpstreamClose(code)
        case .downstreamClose(let code): self.deliverDownstreamClose(code)
        case .upstreamLost: self.upstreamConnectionLost()
        case .downstreamLost: self.downstreamConnectionLost()
        }
    }

    mutating func attach() {
        self.log.append("attach")
        guard case .submit(_, let endStream) = self.machine.attach() else {
            self.fail("attach refused while waiting")
            return
        }
        self.inPool = false
        let id = self.nextUpstreamID
        self.nextUpstreamID += 2
        guard let opened = self.machine.upstreamOpened(streamID: id) else {
            self.fail("upstreamOpened returned nil")
            return
        }
        self.upstreamAttached = true
        self.headersWritten = false
        self.upstreamAlive = true
        self.upstreamStreamOpen = true
        self.upstreamClosePending = nil
        self.upstreamResponded = false
        self.upstreamEndedResponse = false
        self.responseReceived = 0
        self.responseReleased = 0
        self.requestQueued = opened.pending.reduce(0) { $0 + $1.readableBytes }
        self.attemptOffset = 0
        self.requestEndQueued = endStream || opened.end
    }

    mutating func poolFails(status: Int) {
        self.log.append("pool fails \(status)")
        self.inPool = false
        self.apply(self.machine.upstreamUnavailable("cause", status: status))
    }

    mutating func clientSendsData() {
        let n = Int.random(in: 1...40_000, using: &self.rng)
        self.log.append("client DATA \(n)")
        self.requestReceived += n
        switch self.machine.requestData(ByteBuffer(repeating: 0, count: n)) {
        case .forward:
            if !self.upstreamStreamOpen || self.upstreamClosePending != nil {
                self.fail("request forwarded to a closed stream")
            }
            self.requestQueued += n
        case .buffer:
            if self.machine.state != .waitingForUpstream { self.fail("buffered while not waiting") }
        case .discard:
            self.requestReleased += n
        }
    }

    mutating func clientEndsRequest() {
        self.log.append("client END_STREAM")
        self.clientEndedRequest = true
        if self.machine.requestEnd(trailers: nil) {
            if !self.upstreamStreamOpen { self.fail("request end forwarded to a closed stream") }
            self.requestEndQueued = true
        }
    }

    mutating func upstreamWritesRequest() {
        let k = Int.random(in: 1...self.requestQueued, using: &self.rng)
        self.log.append("upstream wrote \(k)")
        self.requestQueued -= k
        self.attemptOffset += k
        self.maxWrittenOffset = max(self.maxWrittenOffset, self.attemptOffset)
        let release = self.machine.requestDataWritten(k)
        self.releasedForWrites += release
        if self.releasedForWrites > self.maxWrittenOffset {
            self.fail(
                "client window given back for \(self.releasedForWrites) bytes, only \(self.maxWrittenOffset) written")
        }
        if release > 0 && !self.downstreamAlive { self.fail("window given to a lost client connection") }
        self.requestReleased += release
    }

    mutating func upstreamSendsHeaders() {
        let kinds: [HeadersKind] = self.upstreamResponded ? [.trailers] : [.informational, .response, .response]
        let kind = kinds[Int.random(in: 0..<kinds.count, using: &self.rng)]
        let end = kind == .trailers || (kind == .response && Bool.random(using: &self.rng))
        self.log.append("upstream HEADERS \(kind) end=\(end)")
        if kind == .response { self.upstreamResponded = true }
        if end { self.upstreamEndedResponse = true }
        switch self.machine.responseHeaders(kind: kind, endStream: end) {
        case .interim:
            self.expectClientCanReceive("interim")
        case .response(let endStream):
            self.expectClientCanReceive("response")
            if self.responseHeadersSent { self.fail("second response HEADERS") }
            self.responseHeadersSent = true
            if endStream { self.responseEndQueued = true }
        case .trailers:
            self.expectClientCanReceive("trailers")
            self.responseEndQueued = true
        case .resetDownstream(let code):
            self.resetDownstream(code)
        case .none:
            break
        }
    }

    mutating func expectClientCanReceive(_ what: String) {
        if !self.downstreamStreamOpen || self.downstreamClosePending != nil || self.responseEndQueued {
            self.fail("\(what) forwarded to a client stream that is closed or ended")
        }
    }

    mutating func upstreamSendsData() {
        let n = Int.random(in: 1...30_000, using: &self.rng)
        self.log.append("upstream DATA \(n)")
        self.responseReceived += n
        switch self.machine.responseData(ByteBuffer(repeating: 0, count: n)) {
        case .forward:
            self.expectClientCanReceive("DATA")
            self.responseQueued += n
        case .buffer, .discard:
            self.responseReleased += n
        }
    }

    mutating func upstreamEndsWithData() {
        self.log.append("upstream END_STREAM")
        self.upstreamEndedResponse = true
        if self.machine.responseEnd() {
            self.expectClientCanReceive("response end")
            self.responseEndQueued = true
        }
    }

    mutating func upstreamResets() {
        let code = Self.codes[Int.random(in: 1..<Self.codes.count, using: &self.rng)]
        self.log.append("upstream RST \(code)")
        self.deliverUpstreamClose(code)
    }

    mutating func downstreamWritesResponse() {
        let k = Int.random(in: 1...self.responseQueued, using: &self.rng)
        self.log.append("client session wrote \(k)")
        self.responseQueued -= k
        let release = self.machine.responseDataWritten(k)
        if release > 0 && !self.upstreamAlive { self.fail("window given to a lost upstream connection") }
        self.responseReleased += release
    }

    mutating func clientResetsOrCloses() {
        // A clean close needs both directions ended and written.
        if self.clientEndedRequest && self.responseEndQueued && self.responseQueued == 0
            && Bool.random(using: &self.rng)
        {
            self.log.append("client stream closed cleanly")
            self.deliverDownstreamClose(0)
            return
        }
        let code = Self.codes[Int.random(in: 1..<Self.codes.count, using: &self.rng)]
        self.log.append("client RST \(code)")
        self.deliverDownstreamClose(code)
    }

    mutating func deliverUpstreamClose(_ code: UInt32) {
        guard self.upstreamStreamOpen else { return }
        self.log.append("upstream stream closed \(code)")
        self.upstreamStreamOpen = false
        self.upstreamClosePending = nil
        self.requestQueued = 0
        self.apply(self.machine.upstreamClosed(errorCode: code))
    }

    mutating func deliverDownstreamClose(_ code: UInt32) {
        guard self.downstreamStreamOpen else { return }
        self.log.append("client stream closed \(code)")
        self.downstreamStreamOpen = false
        self.downstreamClosePending = nil
        self.responseQueued = 0
        self.apply(self.machine.downstreamClosed(errorCode: code, connectionLost: false))
    }

    mutating func upstreamConnectionLost() {
        self.log.append("upstream connection lost")
        self.upstreamAlive = false
        let wasOpen = self.upstreamStreamOpen
        self.upstreamStreamOpen = false
        self.upstreamClosePending = nil
        self.requestQueued = 0
        // The handler tells the machine even when the stream had closed already (ProxyStream
        // checks the connection before giving window back to it).
        _ = wasOpen
        let kinds: [UpstreamLoss] = [.connectionLost, .aboveGoAway, .abandoned]
        let loss = kinds[Int.random(in: 0..<kinds.count, using: &self.rng)]
        self.log.append("  as \(loss)")
        self.apply(self.machine.upstreamConnectionLost("lost", loss))
    }

    mutating func downstreamConnectionLost() {
        self.log.append("client connection lost")
        self.downstreamAlive = false
        let wasOpen = self.downstreamStreamOpen
        self.downstreamStreamOpen = false
        self.downstreamClosePending = nil
        self.responseQueued = 0
        if wasOpen { self.apply(self.machine.downstreamClosed(errorCode: H2ErrorCode.cancel, connectionLost: true)) }
    }

    mutating func resetDownstream(_ code: UInt32) {
        if !self.downstreamStreamOpen { self.fail("reset of a closed client stream") }
        self.downstreamClosePending = code
        self.responseQueued = 0
    }

    // MARK: Effects

    mutating func apply(_ e: ProxyStream.StateMachine.Effects) {
        if e.consumeDownstream > 0 {
            if !self.downstreamAlive { self.fail("window given to a lost client connection") }
            self.requestReleased += e.consumeDownstream
        }
        if e.consumeUpstream > 0 {
            if !self.upstreamAlive { self.fail("window given to a lost upstream connection") }
            self.responseReleased += e.consumeUpstream
        }
        if let code = e.resetUpstream {
            if !self.upstreamStreamOpen { self.fail("reset of a closed upstream stream") }
            self.upstreamClosePending = code
            self.requestQueued = 0
        }
        if let code = e.resetDownstream {
            if code == H2ErrorCode.refusedStream { self.refusedToClient += 1 }
            self.resetDownstream(code)
        }
        if let fault = e.fault {
            self.faults += 1
            self.expectClientCanReceive("fault \(fault)")
            self.responseEndQueued = true
        }
        if e.cancelWaiting {
            if !self.inPool { self.fail("cancelled a stream that was not waiting") }
            self.inPool = false
        }
        if e.retry {
            if self.inPool { self.fail("retried a stream already waiting") }
            if self.responseReceived != self.responseReleased { self.fail("retry left response window behind") }
            self.retries += 1
            self.inPool = true
            self.upstreamAttached = false
            self.upstreamAlive = false
        }
        if let reason = e.finished {
            self.finishedCount += 1
            self.active -= 1
            self.endReason = reason
            self.log.append("finished \(reason)")
        }
    }

    // MARK: Invariants

    mutating func checkInvariants() {
        let m = self.machine
        if m.replayCredit < 0 { self.fail("replay credit \(m.replayCredit)") }
        if m.unreleasedRequestBytes < 0 || m.unreleasedResponseBytes < 0 { self.fail("negative unreleased bytes") }
        if self.finishedCount > 1 { self.fail("stream ended twice") }
        if self.downstreamAlive && self.requestReleased + m.unreleasedRequestBytes != self.requestReceived {
            self.fail(
                "client window: received \(self.requestReceived) != released \(self.requestReleased) + held \(m.unreleasedRequestBytes)"
            )
        }
        if self.upstreamAlive && self.upstreamAttached
            && self.responseReleased + m.unreleasedResponseBytes != self.responseReceived
        {
            self.fail(
                "upstream window: received \(self.responseReceived) != released \(self.responseReleased) + held \(m.unreleasedResponseBytes)"
            )
        }
        // Once the client stream is closed, the upstream stream must be on its way to closing
        // without help from a peer that may never read: reset, or with nothing left to send.
        if !self.downstreamStreamOpen && self.upstreamStreamOpen && self.upstreamClosePending == nil
            && !(self.requestQueued == 0 && self.requestEndQueued && self.upstreamEndedResponse)
        {
            self.fail("upstream stream left open after the client stream closed")
        }
        if self.finishedCount == 1 && (self.downstreamStreamOpen || self.upstreamStreamOpen || self.inPool) {
            self.fail("ended while a side is still open")
        }
    }

    /// Ends the sequence: closes in flight are delivered, then both connections go away.
    mutating func closeEverything() {
        if let code = self.upstreamClosePending { self.deliverUpstreamClose(code) }
        if let code = self.downstreamClosePending { self.deliverDownstreamClose(code) }
        if let code = self.upstreamClosePending { self.deliverUpstreamClose(code) }
        if self.downstreamStreamOpen { self.downstreamConnectionLost() }
        if let code = self.upstreamClosePending { self.deliverUpstreamClose(code) }
        if self.upstreamStreamOpen { self.upstreamConnectionLost() }
        if self.inPool { self.fail("still waiting in the pool after the client left") }
    }
}
