import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

/// Counts the flushes that reach the socket.
private final class FlushCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var flushes = 0

    func flush(context: ChannelHandlerContext) {
        self.flushes += 1
        context.flush()
    }
}

@Suite struct LocalCallBatchTests {
    static func call(_ i: Int) -> LocalCallBatch.Call {
        var request = HeaderBlock(capacity: 0)
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":authority", "u"), (":path", "/s/m\(i)")] {
            request.append(name: name, value: value)
        }
        return LocalCallBatch.Call(
            host: "upstream.test", port: 50051, request: request, body: ByteBuffer(), timeout: .seconds(10))
    }

    @Test func aBatchsCallsShareOneConnectionAndOneFlush() throws {
        let h = BridgeHarness()
        let counter = FlushCounter()
        h.upstreamSetup = { peer in try! peer.channel.pipeline.syncOperations.addHandler(counter, position: .first) }
        var results: [Int: LocalCallResult.Outcome] = [:]
        func start(_ batch: LocalCallBatch) {
            let promises = batch.calls.map { _ in h.eventLoop.makePromise(of: LocalCallResult.self) }
            for (promise, call) in zip(promises, batch.calls) {
                let i = Int(call.request.first(":path")!.dropFirst(4))!
                promise.futureResult.whenSuccess { results[i] = $0.outcome }
            }
            batch.start(on: h.loop, promises: promises)
        }
        // The first call brings the connection up.
        start(LocalCallBatch([Self.call(0)]))
        try h.pump()
        #expect(h.upstreams.count == 1)

        let before = counter.flushes
        start(LocalCallBatch((1...5).map(Self.call)))
        #expect(counter.flushes == before + 1)
        try h.pump()
        let paths = h.upstreams[0].requests.values.compactMap { $0.first(":path") }.sorted()
        #expect(paths == (0...5).map { "/s/m\($0)" })
        #expect(h.upstreams.count == 1)

        try h.closeAll()
        #expect(results.keys.sorted() == Array(0...5))
        #expect(h.isEmpty, "\(h.counts)")
    }

    /// A local call copies its request into a block of the loop's pool and gives that block,
    /// and its response's headers and trailers, back once its result was handed over: after a
    /// warm-up, later calls make no block. A result a caller kept keeps its fields (the pool's
    /// next write to a block still shared copies it first).
    @Test func localCallsGiveTheirBlocksBackToTheLoopsPool() throws {
        let h = BridgeHarness()
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in peer.respondGRPC(id, body: ByteBuffer(string: "answer")) }
        }
        var results: [Int: LocalCallResult] = [:]
        func run(_ range: ClosedRange<Int>) throws {
            let batch = LocalCallBatch(range.map(Self.call))
            let promises = batch.calls.map { _ in h.eventLoop.makePromise(of: LocalCallResult.self) }
            for (i, promise) in zip(range, promises) {
                promise.futureResult.whenSuccess { results[i] = $0 }
            }
            batch.start(on: h.loop, promises: promises)
            try h.pump()
        }
        try run(0...2)
        let made = h.loop.headerBlocks.made
        for round in 1...5 { try run(round * 3...round * 3 + 2) }
        #expect(h.loop.headerBlocks.made == made, "blocks made after the warm-up")
        #expect(results.count == 18)
        for (_, result) in results {
            #expect(result.outcome == .completed)
            #expect(result.grpcStatus == 0)
            #expect(result.headers?.first(":status") == "200")
            #expect(String(buffer: result.body) == "answer")
        }
        try h.closeAll()
        #expect(h.isEmpty, "\(h.counts)")
    }

    /// A call whose response ends after its timeout is a timeout (the stream was cancelled at
    /// the deadline and the late answer is not taken), one whose response ends before it is not.
    @Test(arguments: [false, true])
    func anAnswerAfterTheTimeoutIsATimeout(late: Bool) throws {
        let h = BridgeHarness()
        var call = Self.call(0)
        call.timeout = .milliseconds(500)
        var outcome: LocalCallResult.Outcome?
        let promise = h.eventLoop.makePromise(of: LocalCallResult.self)
        promise.futureResult.whenSuccess { outcome = $0.outcome }
        LocalCallBatch([call]).start(on: h.loop, promises: [promise])
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        let id = try #require(upstream.requests.keys.first)
        try h.advanceTime(by: late ? .milliseconds(505) : .milliseconds(499))
        #expect(outcome == (late ? .timedOut : nil))
        upstream.respondGRPC(id)
        try h.pump()
        #expect(outcome == (late ? .timedOut : .completed))
        try h.closeAll()
    }

    /// A call keeps at most ``LocalCallResult/maxBodyBytes`` of response DATA and says when
    /// there was more; exactly the limit is not truncated.
    @Test(arguments: [0, 1])
    func aResponseOverTheLimitIsMarkedTruncated(over: Int) throws {
        let h = BridgeHarness()
        var result: LocalCallResult?
        let promise = h.eventLoop.makePromise(of: LocalCallResult.self)
        promise.futureResult.whenSuccess { result = $0 }
        LocalCallBatch([Self.call(0)]).start(on: h.loop, promises: [promise])
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        let id = try #require(upstream.requests.keys.first)
        let size = LocalCallResult.maxBodyBytes + over
        upstream.respondGRPC(id, body: ByteBuffer(repeating: 7, count: size))
        try h.pump()
        let got = try #require(result)
        #expect(got.outcome == .completed)
        #expect(got.bodyTruncated == (over > 0))
        if over == 0 { #expect(got.body.readableBytes == size) }
        #expect(got.body.readableBytes <= LocalCallResult.maxBodyBytes)
        try h.closeAll()
    }

    /// The calls of a batch share one deadline per timeout: those still running at it end as
    /// timed out together, each group at its own timeout, and calls that ended before their
    /// deadline are not touched. Once every call of a deadline has ended, nothing keeps them.
    @Test func callsWithOneTimeoutShareADeadline() throws {
        let h = BridgeHarness()
        var calls = (0..<6).map(Self.call)
        for i in 3..<6 { calls[i].timeout = .seconds(2) }
        for i in 0..<3 { calls[i].timeout = .seconds(1) }
        var outcomes: [Int: LocalCallResult.Outcome] = [:]
        let promises = calls.map { _ in h.eventLoop.makePromise(of: LocalCallResult.self) }
        for (i, promise) in promises.enumerated() { promise.futureResult.whenSuccess { outcomes[i] = $0.outcome } }
        LocalCallBatch(calls).start(on: h.loop, promises: promises)
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        let ids = Dictionary(
            uniqueKeysWithValues: upstream.requests.map { (Int($0.value.first(":path")!.dropFirst(4))!, $0.key) })
        // One call of each group answers before its deadline.
        upstream.respondGRPC(ids[0]!)
        upstream.respondGRPC(ids[3]!)
        try h.pump()
        #expect(outcomes == [0: .completed, 3: .completed])
        try h.advanceTime(by: .milliseconds(999))
        #expect(outcomes.count == 2)
        try h.advanceTime(by: .milliseconds(1))
        #expect(outcomes == [0: .completed, 3: .completed, 1: .timedOut, 2: .timedOut])
        try h.advanceTime(by: .seconds(1))
        #expect(outcomes == [0: .completed, 3: .completed, 1: .timedOut, 2: .timedOut, 4: .timedOut, 5: .timedOut])
        try h.closeAll()
        #expect(h.isEmpty, "\(h.counts)")
    }

    /// A deadline holds a call only while it runs: an answered call is freed at once, not kept
    /// until its batch's slowest call ends (or the deadline, an hour away, passes); when the last
    /// ends, the timer is cancelled and the deadline freed too.
    @Test func aDeadlineLetsItsCallsGoWhenTheLastEnds() throws {
        let h = BridgeHarness()
        var calls = (0..<4).map(Self.call)
        for i in calls.indices { calls[i].timeout = .hours(1) }
        weak var deadline: LocalCallDeadline?
        var weakCalls: [BridgeHarness.Weak] = []
        var outcomes: [Int: LocalCallResult.Outcome] = [:]
        do {
            let promises = calls.map { _ in h.eventLoop.makePromise(of: LocalCallResult.self) }
            for (i, promise) in promises.enumerated() { promise.futureResult.whenSuccess { outcomes[i] = $0.outcome } }
            let started = zip(calls, promises).map { call, promise in
                LocalCall(
                    loop: h.loop, pool: h.loop.pool(host: call.host, port: call.port), request: call.request,
                    body: call.body, timeout: call.timeout, promise: promise)
            }
            let shared = LocalCallDeadline(calls: started)
            deadline = shared
            shared.arm(on: h.loop, in: .hours(1))
            shared.startCalls()
            weakCalls = started.map { BridgeHarness.Weak($0) }
            h.loop.flushDirty()
        }
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        let ids = upstream.requests.keys.sorted()
        #expect(ids.count == 4)
        for id in ids.dropLast() { upstream.respondGRPC(id, body: ByteBuffer(string: "answer")) }
        try h.pump()
        #expect(outcomes.count == 3)
        #expect(deadline?.callsRunning == 1, "held by its pending timer while a call runs")
        // The answered calls are gone already (the upstream connection let go of them too).
        #expect(weakCalls.filter { $0.object != nil }.count == 1, "only the running call is held")
        upstream.respondGRPC(ids.last!)
        try h.pump()
        #expect(outcomes.count == 4)
        #expect(outcomes.values.allSatisfy { $0 == .completed })
        #expect(deadline == nil, "the last call's end cancels the timer and frees the deadline")
        try h.closeAll()
        #expect(h.isEmpty, "\(h.counts)")
    }
}

extension LocalCallBatch {
    /// Starts the batch with a promise per call (call `i` completes `promises[i]`): how these
    /// tests watch the calls end.
    func start(on loop: ProxyLoop, promises: [EventLoopPromise<LocalCallResult>]) {
        self.start(on: loop) { index, result in promises[index].succeed(result) }
    }
}

extension LocalCall {
    /// A call on its own that completes `promise`: how these tests watch one call end.
    convenience init(
        loop: ProxyLoop, pool: UpstreamPool, request: HeaderBlock, body: ByteBuffer, timeout: TimeAmount,
        promise: EventLoopPromise<LocalCallResult>
    ) {
        self.init(
            loop: loop, pool: pool, request: request, body: body, timeout: timeout, index: 0,
            completion: { _, result in promise.succeed(result) })
    }
}
