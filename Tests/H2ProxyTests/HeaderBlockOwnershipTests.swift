import Metrics
import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

/// A header block decoded by a session reaches the stream that forwards it as that stream's
/// alone: the timing headers an observer adds are written into it in place, not into a copy of
/// its bytes and field table (3 allocations per block, 6 per proxied call, when the session's
/// event queue still held it). A response block goes back to its session once submitted.
@Suite struct HeaderBlockOwnershipTests {
    /// Appends a field to every request, response and trailers block and records whether the
    /// block's bytes stayed where they were (a copy on write moves them).
    final class AppendingObserver: StreamObserver {
        private(set) var editedInPlace: [String: Bool] = [:]
        private(set) var responseStorage: UnsafeRawPointer?

        private func append(_ what: String, to headers: inout HeaderBlock) {
            let before = Self.storage(of: headers)
            headers.append(name: "x-added", value: "1")
            self.editedInPlace[what] = before == Self.storage(of: headers)
        }

        static func storage(of headers: HeaderBlock) -> UnsafeRawPointer? {
            headers.withFields { raw, _ in raw.baseAddress }
        }

        func requestHeadersWillForward(_ headers: inout HeaderBlock, receivedAt: NIODeadline) {
            self.append("request", to: &headers)
        }
        func requestHeadersSent(at: NIODeadline) {}
        func responseHeadersWillForward(_ headers: inout HeaderBlock, at: NIODeadline) {
            self.append("response", to: &headers)
            self.responseStorage = Self.storage(of: headers)
        }
        func dataReceived(_ direction: StreamDirection, bytes: Int, messages: Int, at: NIODeadline) {}
        func trailersWillForward(_ trailers: inout HeaderBlock, trailersOnly: Bool, receivedAt: NIODeadline) {
            guard !trailers.isEmpty else { return }
            self.append(trailersOnly ? "trailers-only" : "trailers", to: &trailers)
        }
        func streamEnded(_ reason: StreamEndReason, at: NIODeadline) {}
        var measurements: StreamMeasurements? { nil }
    }

    final class Source: LoopObserverSource, @unchecked Sendable {
        private(set) var observers: [AppendingObserver] = []
        func makeObserver(for request: HeaderBlock) -> StreamObserver? {
            let observer = AppendingObserver()
            self.observers.append(observer)
            return observer
        }
    }

    struct Factory: StreamObserverFactory {
        let source: Source
        func makeLoopObserverSource(
            for eventLoop: EventLoop, clock: StreamClock, shard: MetricShard
        ) -> LoopObserverSource { self.source }
    }

    @Test func timingHeadersAreWrittenIntoTheReceivedBlocksInPlace() throws {
        let source = Source()
        let h = BridgeHarness(observerFactory: Factory(source: source))
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(10))
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        upstream.respond(1)
        upstream.send(1, Peer.grpcMessage(16))
        upstream.end(1, trailers: Peer.grpcTrailers(status: 0))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        let observer = try #require(source.observers.first)
        #expect(observer.editedInPlace == ["request": true, "response": true, "trailers": true])
        // What the observer added went out.
        #expect(upstream.headers(1).first?.0.first("x-added") == "1")
        #expect(client.headers(id).allSatisfy { $0.0.first("x-added") == "1" })
        try StreamClockTests.finish(h)
    }

    @Test func aTrailersOnlyResponseIsEditedInPlace() throws {
        let source = Source()
        let h = BridgeHarness(observerFactory: Factory(source: source))
        let client = try h.connectClient()
        let id = try client.open()
        try h.pump()
        try #require(h.upstreams.first).respond(1, Peer.grpcResponse([("grpc-status", "5")]), end: true)
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "5")
        #expect(try #require(source.observers.first).editedInPlace == ["request": true, "trailers-only": true])
        try StreamClockTests.finish(h)
    }

    /// Once submitted to the client, the response block goes back to the loop's pool, and the
    /// request block once the response started: a later call on the loop decodes its request
    /// and its response into kept blocks, making none.
    @Test func forwardedBlocksAreReusedForLaterCalls() throws {
        let source = Source()
        let h = BridgeHarness(observerFactory: Factory(source: source))
        h.upstreamSetup = { peer in peer.onEvent = Peer.answering { peer, id, _ in peer.respondGRPC(id) } }
        let client = try h.connectClient()
        let first = try client.open()
        try h.pump()
        #expect(client.grpcStatus(first)?.status == "0")
        let made = h.loop.headerBlocks.made
        #expect(made >= 1 && h.loop.headerBlocks.count >= 2)
        for _ in 0..<5 {
            let next = try client.open()
            try h.pump()
            #expect(client.grpcStatus(next)?.status == "0")
        }
        #expect(h.loop.headerBlocks.made == made)
        #expect(source.observers.count == 6)
        #expect(source.observers.allSatisfy { $0.responseStorage != nil })
        try StreamClockTests.finish(h)
    }

    /// The request block, which the stream keeps for a replay until the response starts, then
    /// goes back to the loop's pool, which both sessions decode into.
    @Test func aRequestBlockGoesBackToThePoolOnceTheResponseStarts() throws {
        let h = BridgeHarness()
        let client = try h.connectClient()
        let id = try client.open()
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        let kept = h.loop.headerBlocks.count
        upstream.respond(1)
        try h.pump()
        // The response block (submitted to the client) and the request block (no replay needs it).
        #expect(h.loop.headerBlocks.count == kept + 2)
        #expect(h.loop.downstreams.values.first?.session.headerBlocks === h.loop.headerBlocks)
        #expect(h.loop.pool.connections.first?.session.headerBlocks === h.loop.headerBlocks)
        upstream.end(1, trailers: Peer.grpcTrailers(status: 0))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        try StreamClockTests.finish(h)
    }

    /// The pool keeps at most its limit, and no block whose storage grew large.
    @Test func thePoolIsBounded() {
        let pool = HeaderBlockPool(limit: 3)
        var large = HeaderBlock()
        large.append(name: "x-large", value: String(repeating: "v", count: HeaderBlockPool.maxCapacity + 1))
        pool.give(large)
        #expect(pool.count == 0)
        for _ in 0..<10 { pool.give(HeaderBlock()) }
        #expect(pool.count == 3)
        for _ in 0..<5 { _ = pool.take() }
        #expect(pool.count == 0 && pool.made == 2)
    }

    @Test func theMachineHandsTheRequestBackOnlyOnceTheResponseStarted() {
        var machine = ProxyStream.StateMachine(
            request: HeaderBlock([(":method", "POST"), (":path", "/a")]), endStream: true, isGRPC: true, maxRetries: 1)
        guard case .submit = machine.attach() else {
            Issue.record("no submit")
            return
        }
        _ = machine.upstreamOpened(streamID: 1)
        #expect(machine.takeRetiredRequest() == nil)
        _ = machine.responseHeaders(kind: .response, endStream: false)
        #expect(machine.takeRetiredRequest()?.first(":path") == "/a")
        #expect(machine.takeRetiredRequest() == nil)
    }

    /// An upstream connection's one read can carry the responses of many clients' calls: its
    /// session keeps more blocks than a client's, whose connections may be thousands.
    @Test func anUpstreamSessionKeepsMoreBlocksThanAClientSession() {
        for (role, limit) in [(H2Session.Role.server, 4), (.client, 32)] {
            let session = H2Session(role: role)
            for _ in 0..<40 { session.recycle(HeaderBlock()) }
            #expect(session.spareBlockCount == limit)
        }
    }

    @Test func anEmptyBlockWithoutCapacityAllocatesNothing() {
        let block = HeaderBlock(capacity: 0)
        #expect(block.fields.capacity == 0)
        #expect(block.storageCapacity == 0)
        var grown = block
        grown.append(name: "insight-timing", value: "a;dur=1")
        #expect(grown.first("insight-timing") == "a;dur=1")
    }

    /// A block left in its event (no receiver took it) is kept by the session for reuse; one
    /// taken with `takeHeaderBlock` is the receiver's, and the event no longer holds it.
    @Test func takingABlockLeavesTheEventWithoutIt() throws {
        var event = H2Event.headers(streamID: 3, HeaderBlock([(":status", "200")]), kind: .response, endStream: false)
        let taken = event.takeHeaderBlock()
        let block = try #require(taken)
        #expect(block.first(":status") == "200")
        let again = event.takeHeaderBlock()
        #expect(again == nil)
        guard case .endStream(let id) = event else {
            Issue.record("event is \(event)")
            return
        }
        #expect(id == 3)
    }
}
