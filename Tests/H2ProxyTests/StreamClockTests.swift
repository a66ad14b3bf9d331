import Metrics
import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

/// Every time a stream's observer sees comes from the loop's ``StreamClock``: with a manual
/// clock, each event's time is the one the test set, and "received", "sent", "first byte" and
/// "end" are the events the clock's methods name.
@Suite struct StreamClockTests {
    static let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)

    @Test func aManualClockStandsStillUntilAdvanced() {
        let clock = StreamClock.manual(at: Self.t0, unixMicros: 1_700_000_000_000_000)
        #expect(clock.requestReceived() == Self.t0)
        #expect(clock.streamEnded() == Self.t0)
        clock.advance(by: .microseconds(1500))
        #expect(clock.responseEnd() == Self.t0 + .microseconds(1500))
        #expect(clock.unixMicros() == 1_700_000_000_001_500)
    }

    /// Inside one read or flush, the moments that may share a reading do; the ones that close
    /// a measurement (`trailersForwarded`, `requestReceived`) still read the clock; nested
    /// scopes keep the outer reading; after the scope every moment reads the clock again.
    @Test func oneReadingIsSharedInsideAReadOrFlush() {
        let clock = StreamClock.manual(at: Self.t0)
        let later = Self.t0 + .microseconds(700)
        clock.withSharedReading {
            clock.advance(by: .microseconds(700))
            #expect(clock.firstByte() == Self.t0)
            #expect(clock.responseEnd() == Self.t0)
            #expect(clock.dataReceived() == Self.t0)
            #expect(clock.requestSent() == Self.t0)
            #expect(clock.streamEnded() == Self.t0)
            #expect(clock.trailersForwarded() == later)
            #expect(clock.requestReceived() == later)
            clock.withSharedReading { #expect(clock.streamEnded() == Self.t0) }
            #expect(clock.responseEnd() == Self.t0)
        }
        #expect(clock.responseEnd() == later)
        #expect(clock.streamEnded() == later)
    }

    @Test func aSystemClockReadsTheSystemClocks() {
        let clock = StreamClock()
        let before = NIODeadline.now()
        let reading = clock.firstByte()
        #expect(reading >= before && reading <= NIODeadline.now())
        clock.advance(by: .seconds(3600))
        #expect(clock.firstByte() <= NIODeadline.now())
        let wall = StreamClock.systemUnixMicros()
        #expect(abs(clock.unixMicros() - wall) < 5_000_000)
    }

    @Test func everyStreamTimestampComesFromTheLoopsClock() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        // The upstream connection takes 1 ms to come up: the request is sent 1 ms after it arrived.
        h.upstreamSetup = { _ in clock.advance(by: .milliseconds(1)) }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(10))
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        clock.advance(by: .milliseconds(2))
        upstream.respond(1)
        try h.pump()
        clock.advance(by: .milliseconds(3))
        upstream.send(1, Peer.grpcMessage(16))
        try h.pump()
        clock.advance(by: .milliseconds(4))
        upstream.end(1, trailers: Peer.grpcTrailers(status: 0))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        let observer = try #require(source.observers.first)
        #expect(
            observer.milliseconds(since: Self.t0) == [
                "received 0", "data request 0", "sent 1", "first byte 3", "data response 6", "end 10", "ended 10",
            ])
        try Self.finish(h)
    }

    /// An observer that ignores DATA times gets the request's received time for every chunk:
    /// the stream read no clock for them (the clock had moved on by 3 and 6 ms).
    @Test func noClockIsReadPerDataChunkForAnObserverThatWantsNoDataTimes() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        source.wantsDataTimes = false
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(10))
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        clock.advance(by: .milliseconds(3))
        upstream.respond(1)
        upstream.send(1, Peer.grpcMessage(16))
        try h.pump()
        clock.advance(by: .milliseconds(3))
        upstream.send(1, Peer.grpcMessage(16))
        upstream.end(1, trailers: Peer.grpcTrailers(status: 0))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        let observer = try #require(source.observers.first)
        #expect(
            observer.milliseconds(since: Self.t0) == [
                "received 0", "data request 0", "sent 0", "first byte 3", "data response 0", "data response 0",
                "end 6", "ended 6",
            ])
        try Self.finish(h)
    }

    @Test func aTrailersOnlyResponseEndsAtItsFirstByte() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        let client = try h.connectClient()
        let id = try client.open()
        try h.pump()
        clock.advance(by: .milliseconds(7))
        try #require(h.upstreams.first).respond(1, Peer.grpcResponse([("grpc-status", "5")]), end: true)
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "5")
        #expect(
            try #require(source.observers.first).milliseconds(since: Self.t0) == [
                "received 0", "sent 0", "trailers-only 7", "ended 7",
            ])
        try Self.finish(h)
    }

    /// "Sent" is when the upstream session serialised the request HEADERS, in the flush at the
    /// end of the read, not when the stream submitted them: time the proxy spends on the other
    /// streams of the same read before it writes is this stream's own time (`self`).
    @Test func sentIsWhenTheRequestHeadersAreWrittenNotWhenSubmitted() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        // Each request for /busy costs the proxy 1 ms before the loop gets to write.
        source.onRequest = { request in
            if request.first(":path") == "/busy" { clock.advance(by: .milliseconds(1)) }
        }
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        h.upstreamSetup = { peer in peer.onEvent = Peer.answering { peer, id, _ in peer.respondGRPC(id) } }
        let client = try h.connectClient()
        // The upstream connection is up before the two requests arrive.
        let warmUp = try client.open()
        try h.pump()
        #expect(client.grpcStatus(warmUp)?.status == "0")
        clock.advance(by: .milliseconds(10))
        let first = try client.open()
        let busy = try client.open(BackToBack.request(path: "/busy"))
        try h.pump()
        #expect(client.grpcStatus(first)?.status == "0")
        #expect(client.grpcStatus(busy)?.status == "0")
        // Submitted at 10, before /busy was read; written at 11, after it.
        let observer = source.observers[1]
        #expect(observer.milliseconds(since: Self.t0).prefix(2) == ["received 10", "sent 11"])
        try Self.finish(h)
    }

    /// "Sent" is read as the write that carries the HEADERS begins, not after the bytes reached
    /// the socket: read after, an upstream on another thread could receive the request before
    /// its "sent" moment, and the segment to it (its `dur` minus the next hop's) read below zero.
    @Test func sentIsReadBeforeTheBytesReachTheSocket() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        h.upstreamSetup = { peer in
            // Every write to the upstream's socket takes 1 ms of the clock.
            try? peer.channel.pipeline.syncOperations.addHandler(SlowSocketWrite(clock: clock), position: .first)
            peer.onEvent = Peer.answering { peer, id, _ in peer.respondGRPC(id) }
        }
        let client = try h.connectClient()
        let warmUp = try client.open()
        try h.pump()
        #expect(client.grpcStatus(warmUp)?.status == "0")
        let t = clock.requestReceived()
        let id = try client.open()
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        // Sent at the start of the write (t), not after it (t + 1 ms or later).
        #expect(source.observers[1].milliseconds(since: t).prefix(2) == ["received 0", "sent 0"])
        try Self.finish(h)
    }

    private final class SlowSocketWrite: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        let clock: StreamClock
        init(clock: StreamClock) { self.clock = clock }
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            self.clock.advance(by: .milliseconds(1))
            context.write(data, promise: promise)
        }
    }

    @Test func requestsInOneReadShareTheReceivedTimeOfThatRead() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        // Each request for /busy costs the proxy 1 ms while the read is being decoded.
        source.onRequest = { request in
            if request.first(":path") == "/busy" { clock.advance(by: .milliseconds(1)) }
        }
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        h.upstreamSetup = { peer in peer.onEvent = Peer.answering { peer, id, _ in peer.respondGRPC(id) } }
        let client = try h.connectClient()
        let warmUp = try client.open()
        try h.pump()
        #expect(client.grpcStatus(warmUp)?.status == "0")
        clock.advance(by: .milliseconds(10))
        // Both requests arrive in one read: the second was received at 10, not when its turn
        // to be decoded came after /busy (11).
        let busy = try client.open(BackToBack.request(path: "/busy"))
        let second = try client.open()
        try h.pump()
        #expect(client.grpcStatus(busy)?.status == "0")
        #expect(client.grpcStatus(second)?.status == "0")
        #expect(source.observers[2].milliseconds(since: Self.t0).first == "received 10")
        try Self.finish(h)
    }

    // MARK: Calls the sidecar makes itself

    @Test func aLocalCallIsTimedByTheLoopsClockAndHandsBackTypedMeasurements() throws {
        let clock = StreamClock.manual(at: Self.t0)
        let source = RecordingSource()
        let h = BridgeHarness(clock: clock, observerFactory: RecordingFactory(source: source))
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in
                clock.advance(by: .milliseconds(5))
                peer.respondGRPC(id, body: Peer.grpcMessage(3))
            }
        }
        let result = try Self.call(h)
        #expect(result.outcome == .completed)
        #expect(result.grpcStatus == 0)
        #expect(result.startedAt == Self.t0)
        #expect(result.endedAt == Self.t0 + .milliseconds(5))
        #expect(result.measurements == RecordingObserver.measured)
        #expect(
            try #require(source.observers.first).milliseconds(since: Self.t0) == [
                "received 0", "sent 0", "first byte 5", "data response 5", "end 5", "ended 5",
            ])
        try Self.finish(h)
    }

    /// A call refused before any response is replayed, like a proxied stream, up to `maxRetries` times.
    @Test(arguments: [(maxRetries: 1, attempts: 2, completed: true), (maxRetries: 0, attempts: 1, completed: false)])
    func aRefusedLocalCallIsRetriedWithinMaxRetries(maxRetries: Int, attempts: Int, completed: Bool) throws {
        let h = BridgeHarness { $0.maxRetries = maxRetries }
        var seen = 0
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in
                seen += 1
                if seen == 1 {
                    peer.reset(id, H2ErrorCode.refusedStream)
                } else {
                    peer.respondGRPC(id)
                }
            }
        }
        let result = try Self.call(h)
        #expect(seen == attempts)
        #expect(result.outcome == (completed ? .completed : .reset(H2ErrorCode.refusedStream)))
        try Self.finish(h)
    }

    /// Ends a test: every peer closes, and nothing the harness made may stay alive (the
    /// AddressSanitizer run reports what a test leaves behind as a leak).
    static func finish(_ h: BridgeHarness, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try h.closeAll()
        #expect(h.isEmpty, "left over: \(h.counts)", sourceLocation: sourceLocation)
        #expect(h.leftAlive.isEmpty, "still alive: \(h.leftAlive)", sourceLocation: sourceLocation)
    }

    static func call(_ h: BridgeHarness) throws -> LocalCallResult {
        let promise = h.eventLoop.makePromise(of: LocalCallResult.self)
        var result: LocalCallResult?
        promise.futureResult.whenSuccess { result = $0 }
        LocalCall(
            loop: h.loop, pool: h.loop.pool, request: BackToBack.request(), body: Peer.grpcMessage(4),
            timeout: .seconds(5), promise: promise
        ).start()
        h.loop.flushDirty()
        try h.pump()
        return try #require(result)
    }
}

/// Records each observer event with its time.
final class RecordingObserver: StreamObserver {
    static let measured = StreamMeasurements(segments: [.init(hop: "a", next: "service", milliseconds: 1.5)])
    private(set) var events: [(String, NIODeadline)] = []
    let wantsDataTimes: Bool

    init(wantsDataTimes: Bool = true) { self.wantsDataTimes = wantsDataTimes }

    func requestHeadersWillForward(_ headers: inout HeaderBlock, receivedAt: NIODeadline) {
        self.events.append(("received", receivedAt))
    }
    func requestHeadersSent(at: NIODeadline) { self.events.append(("sent", at)) }
    func responseHeadersWillForward(_ headers: inout HeaderBlock, at: NIODeadline) {
        self.events.append(("first byte", at))
    }
    func dataReceived(_ direction: StreamDirection, bytes: Int, messages: Int, at: NIODeadline) {
        self.events.append(("data \(direction)", at))
    }
    func trailersWillForward(_ trailers: inout HeaderBlock, trailersOnly: Bool, receivedAt: NIODeadline) {
        self.events.append((trailersOnly ? "trailers-only" : "end", receivedAt))
    }
    func streamEnded(_ reason: StreamEndReason, at: NIODeadline) { self.events.append(("ended", at)) }
    var measurements: StreamMeasurements? { Self.measured }

    /// `name milliseconds-since-t0` for each event, in order.
    func milliseconds(since t0: NIODeadline) -> [String] {
        self.events.map { "\($0.0) \(($0.1 - t0).nanoseconds / 1_000_000)" }
    }
}

final class RecordingSource: LoopObserverSource, @unchecked Sendable {
    private(set) var observers: [RecordingObserver] = []
    /// Called with each request before its observer sees it (a test's stand-in for work).
    var onRequest: ((HeaderBlock) -> Void)?
    /// What each observer says it wants (``StreamObserver/wantsDataTimes``).
    var wantsDataTimes = true
    func makeObserver(for request: HeaderBlock) -> StreamObserver? {
        self.onRequest?(request)
        let observer = RecordingObserver(wantsDataTimes: self.wantsDataTimes)
        self.observers.append(observer)
        return observer
    }
}

struct RecordingFactory: StreamObserverFactory {
    let source: RecordingSource
    func makeLoopObserverSource(
        for eventLoop: EventLoop, clock: StreamClock, shard: MetricShard
    ) -> LoopObserverSource { self.source }
}
