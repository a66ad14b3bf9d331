import Logging
import Metrics
import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

/// An ``UpstreamStream`` that only records how the pool ended its wait.
private final class WaitingStream: UpstreamStream {
    let name: Int
    var attached = 0
    var failures: [String] = []
    var waitTimeouts: [(cause: String, at: NIODeadline)] = []
    private let loop: EmbeddedEventLoop

    init(_ name: Int, loop: EmbeddedEventLoop) {
        self.name = name
        self.loop = loop
    }

    var ends: Int { self.attached + self.failures.count + self.waitTimeouts.count }

    func attach(to connection: UpstreamConnection) { self.attached += 1 }
    func failUnavailable(_ cause: String) { self.failures.append(cause) }
    func upstreamWaitTimedOut(_ cause: String) { self.waitTimeouts.append((cause, self.loop.now)) }
    func responseHeaders(_ headers: HeaderBlock, kind: HeadersKind, endStream: Bool) {}
    func responseData(_ chunk: ByteBuffer) {}
    func responseDataEnded() {}
    func requestHeadersWritten(at sentAt: NIODeadline) {}
    func requestDataWritten(_ bytes: Int) {}
    func upstreamDidClose(errorCode: UInt32) {}
    func upstreamConnectionLost(_ cause: String, _ loss: UpstreamLoss) {}
}

/// A `ProxyLoop` on an `EmbeddedEventLoop`, time driven by hand. By default its pools never
/// connect (at most 0 upstream connections), so streams stay in the wait queue.
private struct PoolHarness {
    let eventLoop = EmbeddedEventLoop()
    let metrics = ProxyMetrics(registry: MetricsRegistry())
    let loop: ProxyLoop

    init(waitTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(60), maxConnections: Int = 0) {
        var configuration = ProxyConfiguration(
            listenHost: "127.0.0.1", listenPort: 0, upstreamHost: "upstream.test", upstreamPort: 50051)
        configuration.maxUpstreamConnectionsPerLoop = maxConnections
        configuration.upstreamWaitTimeout = waitTimeout
        configuration.upstreamIdleTimeout = idleTimeout
        self.loop = ProxyLoop(
            eventLoop: self.eventLoop, configuration: configuration, metrics: self.metrics, observerFactory: nil,
            localResponder: nil, logger: Logger(label: "test"))
    }

    var pool: UpstreamPool { self.loop.pool }
    var waitTimeouts: UInt64 { self.metrics.limitUpstreamWaitTimeout.value }

    func stream(_ name: Int) -> WaitingStream { WaitingStream(name, loop: self.eventLoop) }

    func contains(_ pool: UpstreamPool) -> Bool { self.loop.allPools.contains { $0 === pool } }
}

/// The upstream's side of the pool's connections: each one on an `EmbeddedChannel` (through
/// ``ProxyLoop/upstreamConnector``), answered by an nghttp2 server session in memory.
private final class UpstreamPeer {
    let server = H2Session(role: .server, settings: .init())
    var channel: EmbeddedChannel?
    var events: [H2Event] = []

    init(_ h: PoolHarness) {
        let eventLoop = h.eventLoop
        // Weak: the loop keeps its connector, and the connector must not keep this peer (and
        // its channel) alive past the test.
        h.loop.upstreamConnector = { [weak self] connection, _, _ in
            let channel = EmbeddedChannel(handler: connection, loop: eventLoop)
            self?.channel = channel
            return channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 1)).map { _ in }
        }
    }

    /// Starts a call of this sidecar's own on `pool`; its results land in the returned box.
    static func startCall(_ h: PoolHarness, on pool: UpstreamPool) -> ResultBox {
        var request = HeaderBlock(capacity: 0)
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":authority", "u"), (":path", "/s/m")] {
            request.append(name: name, value: value)
        }
        let box = ResultBox()
        let promise = h.eventLoop.makePromise(of: LocalCallResult.self)
        promise.futureResult.whenSuccess { box.results.append($0) }
        LocalCall(
            loop: h.loop, pool: pool, request: request, body: ByteBuffer(), timeout: .minutes(10), promise: promise
        ).start()
        return box
    }

    func respond(streamID: Int32) throws {
        var response = HeaderBlock(capacity: 0)
        response.append(name: ":status", value: "200")
        try self.server.submitResponse(streamID: streamID, response, endStream: true)
        try self.pump()
    }

    var goAwayCodes: [UInt32] {
        self.events.compactMap { if case .goAway(_, let code) = $0 { code } else { nil } }
    }

    /// Moves bytes both ways until neither side has more.
    func pump() throws {
        guard let channel = self.channel else { return }
        for _ in 0..<20 {
            var moved = false
            while let bytes = try channel.readOutbound(as: ByteBuffer.self) {
                moved = true
                try self.server.receive(bytes)
            }
            self.server.withEvents { self.events.append($0) }
            var replies: [ByteBuffer] = []
            _ = try self.server.produceOutput { replies.append($0) }
            for bytes in replies where channel.isActive {
                moved = true
                try channel.writeInbound(bytes)
            }
            if !moved { return }
        }
    }
}

private final class ResultBox {
    var results: [LocalCallResult] = []
}

private final class Item {
    let id: Int
    init(_ id: Int) { self.id = id }
}

private func at(_ seconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(1_000_000_000 + seconds * 1_000_000_000)) }

@Suite struct UpstreamPoolDeadlineTests {
    // MARK: The wait queue, with fake times

    @Test func waitQueueDeadlineIsTheHeadsAndExpiresInOrder() {
        var q = UpstreamPool.WaitQueue<Item>()
        #expect(q.deadline(timeout: .seconds(5)) == nil)
        let a = Item(1)
        let b = Item(2)
        let c = Item(3)
        q.append(a, now: at(0))
        q.append(b, now: at(2))
        q.append(c, now: at(4))
        #expect(q.deadline(timeout: .seconds(5)) == at(5))
        #expect(q.removeExpired(now: at(4), timeout: .seconds(5)).isEmpty)
        // Exactly at the deadline counts as expired.
        #expect(q.removeExpired(now: at(7), timeout: .seconds(5)).map(\.id) == [1, 2])
        #expect(q.deadline(timeout: .seconds(5)) == at(9))
        #expect(q.first === c)
        #expect(q.removeExpired(now: at(100), timeout: .seconds(5)).map(\.id) == [3])
        #expect(q.isEmpty)
    }

    @Test func waitQueueRemovingOneKeepsTheOrderOfTheRest() {
        var q = UpstreamPool.WaitQueue<Item>()
        let items = (0..<4).map(Item.init)
        for (i, item) in items.enumerated() { q.append(item, now: at(Int64(i))) }
        #expect(q.removeFirst { $0 === items[0] })
        #expect(!q.removeFirst { $0 === items[0] })
        #expect(q.removeFirst { $0 === items[2] })
        #expect(q.deadline(timeout: .seconds(1)) == at(2))
        #expect(q.removeAll().map(\.id) == [1, 3])
        #expect(q.isEmpty && q.deadline(timeout: .seconds(1)) == nil)
    }

    @Test func idleConnectionsKeepTheEarliestMarkAndExpireOnlyTheOld() {
        var idle = UpstreamPool.IdleConnections<Item>()
        let a = Item(1)
        let b = Item(2)
        #expect(idle.deadline(timeout: .seconds(60)) == nil)
        idle.markIdle(a, now: at(0))
        idle.markIdle(a, now: at(30))
        idle.markIdle(b, now: at(10))
        #expect(idle.deadline(timeout: .seconds(60)) == at(60))
        #expect(idle.removeExpired(now: at(65), timeout: .seconds(60)).map(\.id) == [1])
        #expect(idle.deadline(timeout: .seconds(60)) == at(70))
        // A stream attached: no longer idle; marked again from when it ends.
        idle.forget(b)
        #expect(idle.isEmpty)
        idle.markIdle(b, now: at(80))
        #expect(idle.removeExpired(now: at(139), timeout: .seconds(60)).isEmpty)
        #expect(idle.removeExpired(now: at(140), timeout: .seconds(60)).map(\.id) == [2])
    }

    // MARK: The pool's timer, driven with advanceTime

    @Test func aWaitingStreamTimesOutAfterTheWaitTimeoutAndIsCounted() throws {
        let h = PoolHarness(waitTimeout: .seconds(10))
        let start = h.eventLoop.now
        let s = h.stream(1)
        h.pool.open(s)
        #expect(h.pool.waitingStreams == 1)
        #expect(h.pool.hasDeadlineCheck)
        h.eventLoop.advanceTime(by: .seconds(10) - .nanoseconds(1))
        #expect(s.ends == 0)
        h.eventLoop.advanceTime(by: .nanoseconds(1))
        #expect(s.waitTimeouts.count == 1)
        #expect(s.waitTimeouts.first?.at == start + .seconds(10))
        #expect(s.waitTimeouts.first?.cause.contains("within 10s") == true)
        #expect(s.failures.isEmpty && s.attached == 0)
        #expect(h.pool.waitingStreams == 0)
        #expect(h.waitTimeouts == 1)
        // Nothing waits: no timer.
        #expect(!h.pool.hasDeadlineCheck)
        h.eventLoop.advanceTime(by: .minutes(5))
        #expect(s.ends == 1)
    }

    /// The pool's timer reaches it through a ``TimerTarget`` (a weak reference would put every
    /// retain and release of the pool on the runtime's slow path): it must not keep the pool
    /// alive, and it never fires into a pool that is gone.
    @Test func aDroppedPoolIsFreedAndItsPendingTimerNeverFires() {
        let h = PoolHarness(waitTimeout: .seconds(10))
        let s = h.stream(1)
        var pool: UpstreamPool? = UpstreamPool(loop: h.loop, host: "dropped.test", port: 1)
        pool!.open(s)
        #expect(pool!.hasDeadlineCheck)
        weak let watched = pool
        pool = nil
        #expect(watched == nil, "a pending timer kept the pool alive")
        h.eventLoop.advanceTime(by: .minutes(5))
        #expect(s.ends == 0)
    }

    /// A task that runs after its owner is gone (NIO runs a due batch of timers even if one of
    /// them was cancelled meanwhile) finds no target instead of a freed object.
    @Test func aTimerTargetIsNilOnceItsOwnerIsGone() {
        final class Owner {
            lazy var target = TimerTarget(self)
            deinit { self.target.targetGone() }
        }
        var owner: Owner? = Owner()
        let target = owner!.target
        #expect(target.current === owner)
        owner = nil
        #expect(target.current == nil)
    }

    @Test func aCancelledStreamIsNeverTimedOutAndStopsTheTimer() {
        let h = PoolHarness(waitTimeout: .seconds(1))
        let s = h.stream(1)
        h.pool.open(s)
        h.eventLoop.advanceTime(by: .milliseconds(500))
        h.pool.cancelWaiting(s)
        #expect(!h.pool.hasDeadlineCheck)
        h.eventLoop.advanceTime(by: .seconds(5))
        #expect(s.ends == 0)
        #expect(h.waitTimeouts == 0)
    }

    /// Random opens, cancels and clock steps on one pool: every stream ends at most once, a
    /// timed-out stream is told exactly `upstreamWaitTimeout` after it joined, the timer runs
    /// exactly while something waits, and the counter matches.
    @Test(arguments: 0..<200 as Range<UInt64>)
    func randomWaitsEndOnceAndOnTime(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        let timeout = TimeAmount.milliseconds(Int64.random(in: 100...3000, using: &rng))
        let h = PoolHarness(waitTimeout: timeout)
        var joined: [ObjectIdentifier: NIODeadline] = [:]
        var waiting: [WaitingStream] = []
        var all: [WaitingStream] = []
        var cancelled = 0
        for step in 0..<200 {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                let s = h.stream(step)
                joined[ObjectIdentifier(s)] = h.eventLoop.now
                h.pool.open(s)
                waiting.append(s)
                all.append(s)
            case 4..<6 where !waiting.isEmpty:
                let s = waiting.remove(at: Int.random(in: 0..<waiting.count, using: &rng))
                if s.ends == 0 {
                    h.pool.cancelWaiting(s)
                    cancelled += 1
                }
            default:
                h.eventLoop.advanceTime(by: .milliseconds(Int64.random(in: 0...1500, using: &rng)))
            }
            waiting.removeAll { $0.ends > 0 }
            for s in all {
                #expect(s.ends <= 1, "seed \(seed) step \(step): stream \(s.name) ended \(s.ends) times")
                if let told = s.waitTimeouts.first {
                    #expect(told.at == joined[ObjectIdentifier(s)]! + timeout, "seed \(seed) step \(step)")
                }
            }
            #expect(h.pool.waitingStreams == waiting.count, "seed \(seed) step \(step)")
            #expect(h.pool.hasDeadlineCheck == (h.pool.waitingStreams > 0), "seed \(seed) step \(step)")
            #expect(h.waitTimeouts == UInt64(all.filter { !$0.waitTimeouts.isEmpty }.count))
        }
        // Whatever still waits times out in the end; cancelled ones never do.
        h.eventLoop.advanceTime(by: timeout)
        #expect(h.pool.waitingStreams == 0)
        #expect(all.filter { $0.ends == 0 }.count == cancelled, "seed \(seed)")
    }

    // MARK: LocalCall against the wait deadline

    @Test func aLocalCallWaitingPastTheWaitTimeoutFailsOnceAsUnavailable() throws {
        let h = PoolHarness(waitTimeout: .seconds(1))
        let promise = h.eventLoop.makePromise(of: LocalCallResult.self)
        let call = LocalCall(
            loop: h.loop, pool: h.pool, request: HeaderBlock(capacity: 0), body: ByteBuffer(), timeout: .seconds(5),
            promise: promise)
        call.start()
        var results: [LocalCallResult] = []
        promise.futureResult.whenSuccess { results.append($0) }
        h.eventLoop.advanceTime(by: .seconds(1))
        #expect(results.count == 1)
        guard case .connectFailed(let cause) = results.first?.outcome else {
            Issue.record("expected connectFailed, got \(String(describing: results.first?.outcome))")
            return
        }
        #expect(cause.contains("no stream slot"))
        #expect(h.waitTimeouts == 1)
        // The call's own timeout was cancelled: nothing else happens.
        h.eventLoop.advanceTime(by: .seconds(10))
        #expect(results.count == 1)
    }

    @Test func aLocalCallWhoseOwnTimeoutComesFirstLeavesTheQueue() throws {
        let h = PoolHarness(waitTimeout: .seconds(2))
        let promise = h.eventLoop.makePromise(of: LocalCallResult.self)
        let call = LocalCall(
            loop: h.loop, pool: h.pool, request: HeaderBlock(capacity: 0), body: ByteBuffer(),
            timeout: .milliseconds(500), promise: promise)
        call.start()
        var results: [LocalCallResult] = []
        promise.futureResult.whenSuccess { results.append($0) }
        h.eventLoop.advanceTime(by: .milliseconds(500))
        #expect(results.map(\.outcome) == [.timedOut])
        #expect(h.pool.waitingStreams == 0)
        #expect(!h.pool.hasDeadlineCheck)
        h.eventLoop.advanceTime(by: .seconds(5))
        #expect(results.count == 1)
        #expect(h.waitTimeouts == 0)
        // Told late anyway (a pool that had already dequeued it): still one end.
        call.upstreamWaitTimedOut("late")
        #expect(results.count == 1)
    }

    // MARK: Idle connections, on an EmbeddedChannel

    @Test func anUpstreamConnectionClosesWithGoAwayOnlyAfterIdleTimeoutWithoutStreams() throws {
        let h = PoolHarness(idleTimeout: .seconds(60), maxConnections: 1)
        let peer = UpstreamPeer(h)
        let call = UpstreamPeer.startCall(h, on: h.pool)
        try peer.pump()
        #expect(h.pool.connections.count == 1)
        #expect(peer.events.contains { if case .headers(1, _, .request, _) = $0 { true } else { false } })
        // Busy for longer than the idle timeout: kept.
        h.eventLoop.advanceTime(by: .seconds(90))
        #expect(peer.channel?.isActive == true)
        try peer.respond(streamID: 1)
        #expect(call.results.map(\.outcome) == [.completed])
        #expect(h.pool.hasDeadlineCheck)
        h.eventLoop.advanceTime(by: .seconds(60) - .nanoseconds(1))
        #expect(peer.channel?.isActive == true)
        #expect(h.metrics.limitUpstreamIdleTimeout.value == 0)
        h.eventLoop.advanceTime(by: .nanoseconds(1))
        try peer.pump()
        #expect(peer.goAwayCodes == [H2ErrorCode.noError])
        #expect(peer.channel?.isActive == false)
        #expect(h.metrics.limitUpstreamIdleTimeout.value == 1)
        #expect(h.pool.connections.count == 0)
        #expect(!h.pool.hasDeadlineCheck)
    }

    // MARK: Pruning

    @Test func retainPoolsDropsTheOthersAndNeverTheUpstreams() {
        let h = PoolHarness()
        let main = h.loop.pool!
        let kept = h.loop.pool(host: "10.0.0.1", port: 9000)
        let dropped = h.loop.pool(host: "10.0.0.2", port: 9000)
        #expect(h.loop.pool(host: "upstream.test", port: 50051) === main)
        h.loop.retainPools([ProxyLoop.poolKey(host: "10.0.0.1", port: 9000)])
        #expect(dropped.isRetired && !kept.isRetired && !main.isRetired)
        #expect(h.loop.pool(host: "10.0.0.1", port: 9000) === kept)
        #expect(h.loop.pool(host: "upstream.test", port: 50051) === main)
        // Nothing referred to it: gone at once; the address gets a fresh pool if used again.
        #expect(!h.contains(dropped))
        let again = h.loop.pool(host: "10.0.0.2", port: 9000)
        #expect(again !== dropped && !again.isRetired)
        h.loop.retainPools([])
        #expect(kept.isRetired && again.isRetired && !main.isRetired)
        #expect(h.loop.allPools.count == 1 && h.contains(main))
    }

    @Test func aRetiredPoolClosesItsConnectionOnceItsCallIsDone() throws {
        let h = PoolHarness(maxConnections: 1)
        let peer = UpstreamPeer(h)
        let probe = h.loop.pool(host: "10.0.0.5", port: 9000)
        let call = UpstreamPeer.startCall(h, on: probe)
        try peer.pump()
        #expect(probe.connections.count == 1)
        h.loop.retainPools([])
        try peer.pump()
        // The call goes on; the pool is kept for it.
        #expect(peer.goAwayCodes.isEmpty && peer.channel?.isActive == true)
        #expect(h.contains(probe))
        try peer.respond(streamID: 1)
        #expect(call.results.map(\.outcome) == [.completed])
        #expect(peer.goAwayCodes == [H2ErrorCode.noError])
        #expect(peer.channel?.isActive == false)
        #expect(!h.contains(probe))
        // Not an idle timeout.
        #expect(h.metrics.limitUpstreamIdleTimeout.value == 0)
        h.eventLoop.run()
    }

    @Test func aRetiredPoolStaysUntilItsStreamsAreDone() {
        let h = PoolHarness(waitTimeout: .seconds(1))
        let probe = h.loop.pool(host: "10.0.0.3", port: 9000)
        let s = h.stream(1)
        probe.open(s)
        h.loop.retainPools([])
        #expect(probe.isRetired)
        #expect(h.contains(probe))
        #expect(probe.waitingStreams == 1)
        h.eventLoop.advanceTime(by: .seconds(1))
        #expect(s.waitTimeouts.count == 1)
        #expect(!h.contains(probe))

        let other = h.loop.pool(host: "10.0.0.4", port: 9000)
        let t = h.stream(2)
        other.open(t)
        h.loop.retainPools([])
        #expect(h.contains(other))
        other.cancelWaiting(t)
        #expect(!h.contains(other))
        #expect(t.ends == 0)
    }
}
