import Logging
import NIOCore
import NIOPosix

/// The h2c connections of one event loop to the upstream hop.
///
/// A stream goes to the first ready connection with room under the peer's
/// MAX_CONCURRENT_STREAMS; when none has room (or after a GOAWAY) a new connection is opened,
/// up to the configured maximum, and streams wait for it.
///
/// Two deadlines, checked by one timer that runs only while something can expire: a stream
/// waits at most ``ProxyConfiguration/upstreamWaitTimeout`` for a slot, and a connection
/// without streams for ``ProxyConfiguration/upstreamIdleTimeout`` is closed with GOAWAY.
/// A pool for a probe target that discovery dropped is retired (``retire()``): its
/// connections close once their streams are done.
final class UpstreamPool {
    /// Unowned, and safe: everything that holds a pool (the loop itself, an
    /// ``UpstreamConnection``, a ``LocalCall``, a ``ProxyStream``) holds the loop strongly too,
    /// so the loop outlives every pool. Strong here would make loop and pool a cycle for good.
    unowned let loop: ProxyLoop
    let host: String
    let port: Int
    private(set) var connections: [UpstreamConnection] = []
    private var connecting = 0
    private var waiting = WaitQueue<UpstreamStream>()
    private var idle = IdleConnections<UpstreamConnection>()
    private var deadlineTimer: Scheduled<Void>?
    private var deadlineTimerAt: NIODeadline?
    private var waitLimitHit = false
    private(set) var isRetired = false
    /// `/readyz`: the check in progress and its deadline (``UpstreamPool/checkReadiness(deadline:)``).
    var readinessCheck = ReadinessCheck<UpstreamConnection, EventLoopPromise<UpstreamReadiness>>()
    var readinessTimer: Scheduled<Void>?
    var readinessStarted = NIODeadline.uptimeNanoseconds(0)

    /// What the pool connects to, for messages: "upstream HOST:PORT" for the loop's upstream
    /// pool, "probe target HOST:PORT" for a pool only probes use.
    private(set) lazy var peer: String = "\(self.isUpstream ? "upstream" : "probe target") \(self.host):\(self.port)"

    /// Whether this is the loop's pool to the configured upstream (which probes may share).
    var isUpstream: Bool { self.loop.pool === self }

    init(loop: ProxyLoop, host: String, port: Int) {
        self.loop = loop
        self.host = host
        self.port = port
    }

    /// How the pool's timers reach it (``TimerTarget``).
    private(set) lazy var timerTarget = TimerTarget(self)

    deinit {
        self.timerTarget.targetGone()
        self.deadlineTimer?.cancel()
        self.readinessTimer?.cancel()
    }

    /// Streams waiting for a slot now.
    var waitingStreams: Int { self.waiting.count }

    func open(_ stream: UpstreamStream) {
        if self.waiting.isEmpty, let connection = self.connectionWithRoom() {
            self.attach(stream, to: connection)
            return
        }
        self.waiting.append(stream, now: self.loop.eventLoop.now)
        self.scheduleDeadlineCheck()
        self.connectIfNeeded()
    }

    func cancelWaiting(_ stream: UpstreamStream) {
        guard self.waiting.removeFirst(where: { $0 === stream }) else { return }
        self.cancelDeadlineCheckIfNothingPending()
        self.releaseIfRetiredAndEmpty()
    }

    private func attach(_ stream: UpstreamStream, to connection: UpstreamConnection) {
        stream.attach(to: connection)
        if !connection.streams.isEmpty { self.idle.forget(connection) }
    }

    private func connectionWithRoom() -> UpstreamConnection? {
        for c in self.connections where c.availableStreams > 0 { return c }
        return nil
    }

    /// A connection became ready, finished a stream, or got GOAWAY: hand it waiting streams.
    /// Called after a finished stream has left `connection.streams`.
    func capacityChanged(_ connection: UpstreamConnection) {
        if connection.state == .ready { self.readinessEvent(self.readinessCheck.connectionReady(connection)) }
        self.dispatchWaiting()
        if connection.streams.isEmpty {
            if self.isRetired {
                self.closeGracefully(connection)
            } else {
                self.idle.markIdle(connection, now: self.loop.eventLoop.now)
                self.scheduleDeadlineCheck()
            }
        }
    }

    private func dispatchWaiting() {
        guard !self.waiting.isEmpty else { return }
        while let stream = self.waiting.first {
            guard let connection = self.connectionWithRoom() else {
                self.connectIfNeeded()
                return
            }
            _ = self.waiting.removeFirst()
            self.attach(stream, to: connection)
        }
        if self.waitLimitHit {
            self.waitLimitHit = false
            self.loop.noteLimit(self.waitLimitName, hit: false)
        }
        self.cancelDeadlineCheckIfNothingPending()
    }

    func connectIfNeeded() {
        // One handshake at a time: a connection counts as connecting until its SETTINGS arrive,
        // not only until TCP connects (streams queued meanwhile used to open a second one).
        guard !self.waiting.isEmpty || self.readinessCheck.wantsConnection, self.connecting == 0,
            !self.connections.contains(where: { $0.state == .connecting })
        else { return }
        // Drop connections that can take nothing more and are done.
        guard self.connections.count < self.loop.configuration.maxUpstreamConnectionsPerLoop else {
            // At the cap: streams wait for room on an existing connection.
            return
        }
        self.connecting += 1
        let loop = self.loop
        let connection = UpstreamConnection(loop: loop, pool: self)
        self.connections.append(connection)
        // Idle until a stream attaches: a connection whose streams all gave up while it was
        // connecting, or that never sends SETTINGS, closes like any idle one.
        self.idle.markIdle(connection, now: loop.eventLoop.now)
        self.scheduleDeadlineCheck()
        if self.isRetired { loop.keepRetiredPool(self) }
        (loop.upstreamConnector?(connection, self.host, self.port) ?? self.connect(connection))
            .assumeIsolated()
            .whenComplete { result in
                self.connecting -= 1
                switch result {
                case .success:
                    break
                case .failure(let error):
                    self.connectFailed(connection, error: error)
                }
                self.loop.flushDirty()
            }
    }

    /// Opens a TCP (and TLS, if configured) connection for `connection`'s handler.
    private func connect(_ connection: UpstreamConnection) -> EventLoopFuture<Void> {
        let handlerBox = NIOLoopBound(connection, eventLoop: self.loop.eventLoop)
        let configuration = self.loop.configuration
        return ClientBootstrap(group: self.loop.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = handlerBox.value
                    try channel.pipeline.syncOperations.addTLSHandler(
                        connection.loop.configuration.upstreamTLS, logger: connection.loop.logger)
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: self.host, port: self.port)
            .map { _ in }
    }

    private func connectFailed(_ connection: UpstreamConnection, error: Error) {
        self.loop.metrics.upstreamConnectErrors.increment()
        self.connections.removeAll { $0 === connection }
        self.idle.forget(connection)
        let cause = "\(self.peer) unreachable: \(UpstreamFailure.describe(error))"
        self.noteConnectFailure(cause)
        for stream in self.waiting.removeAll() { stream.failUnavailable(cause) }
        self.readinessEvent(self.readinessCheck.connectionFailed(connection, beforeReady: true, cause: cause))
        self.cancelDeadlineCheckIfNothingPending()
        self.releaseIfRetiredAndEmpty()
    }

    /// Logs a failure to connect once per distinct cause for the process, not once per
    /// attempt or per loop.
    private func noteConnectFailure(_ cause: String) {
        guard self.loop.reachability.failed("\(self.host):\(self.port)", cause: cause) else { return }
        self.loop.logger.warning(
            self.isUpstream ? "cannot connect to upstream" : "cannot connect to probe target",
            metadata: ["error": "\(cause)"])
    }

    /// A connection got the upstream's SETTINGS: if connecting had failed, say it works again.
    func connectionReady(_ connection: UpstreamConnection) {
        guard let previous = self.loop.reachability.succeeded("\(self.host):\(self.port)") else { return }
        self.loop.logger.notice(
            self.isUpstream ? "upstream reachable again" : "probe target reachable again",
            metadata: ["upstream": "\(self.host):\(self.port)", "previous_error": "\(previous)"])
    }

    /// Called by a connection's `channelInactive`.
    func connectionClosed(_ connection: UpstreamConnection, beforeReady: Bool, cause: String? = nil) {
        self.connections.removeAll { $0 === connection }
        self.idle.forget(connection)
        let closedCause =
            cause ?? "\(self.peer) closed the connection"
            + (beforeReady ? " before its SETTINGS" : "")
        if beforeReady { self.noteConnectFailure(closedCause) }
        self.readinessEvent(
            self.readinessCheck.connectionFailed(connection, beforeReady: beforeReady, cause: closedCause))
        if beforeReady && self.connecting == 0 && !self.waiting.isEmpty {
            let cause = cause ?? "\(self.peer) closed the connection before its SETTINGS"
            for stream in self.waiting.removeAll() {
                stream.failUnavailable(cause)
            }
        } else {
            self.dispatchWaiting()
        }
        self.cancelDeadlineCheckIfNothingPending()
        self.releaseIfRetiredAndEmpty()
    }

    /// Shutdown: streams waiting for a slot and streams on a connection end with `cause`, and
    /// every connection closes.
    func abandon(_ cause: String) {
        for stream in self.waiting.removeAll() { stream.failUnavailable(cause) }
        self.cancelDeadlineCheckIfNothingPending()
        for c in self.connections { c.abandon(cause) }
    }

    // MARK: Deadlines

    /// Whether the deadline timer is armed (for tests: it runs only while something can expire).
    var hasDeadlineCheck: Bool { self.deadlineTimer != nil }

    private var waitLimitName: String { "upstream_wait_timeout \(self.host):\(self.port)" }

    /// Aims the pool's one timer at the earliest deadline, unless it already fires before it.
    private func scheduleDeadlineCheck() {
        let configuration = self.loop.configuration
        let waitDeadline = self.waiting.deadline(timeout: configuration.upstreamWaitTimeout)
        let idleDeadline = self.idle.deadline(timeout: configuration.upstreamIdleTimeout)
        guard let next = Self.earliest(waitDeadline, idleDeadline) else {
            self.cancelDeadlineCheckIfNothingPending()
            return
        }
        if let at = self.deadlineTimerAt, at <= next { return }
        self.deadlineTimer?.cancel()
        self.deadlineTimerAt = next
        // Through a TimerTarget: the loop keeps the pools it needs, and a pending timer must not
        // keep one alive (nor reference it weakly: see TimerTarget).
        self.deadlineTimer = self.loop.eventLoop.assumeIsolated().scheduleTask(deadline: next) {
            [timerTarget = self.timerTarget] in
            timerTarget.current?.deadlinesPassed()
        }
    }

    private static func earliest(_ a: NIODeadline?, _ b: NIODeadline?) -> NIODeadline? {
        guard let a else { return b }
        guard let b else { return a }
        return min(a, b)
    }

    /// A deadline that passed early stays harmless (the check finds nothing and re-aims); this
    /// stops the timer once nothing at all can expire.
    private func cancelDeadlineCheckIfNothingPending() {
        guard self.deadlineTimer != nil, self.waiting.isEmpty, self.idle.isEmpty else { return }
        self.deadlineTimer?.cancel()
        self.deadlineTimer = nil
        self.deadlineTimerAt = nil
    }

    private func deadlinesPassed() {
        // The deadline the timer was aimed at counts as reached, so a clock read a hair early
        // cannot re-aim the timer at the same instant again and again.
        let now = max(self.loop.eventLoop.now, self.deadlineTimerAt ?? .uptimeNanoseconds(0))
        self.deadlineTimer = nil
        self.deadlineTimerAt = nil
        let configuration = self.loop.configuration
        let late = self.waiting.removeExpired(now: now, timeout: configuration.upstreamWaitTimeout)
        if !late.isEmpty {
            self.loop.metrics.limitUpstreamWaitTimeout.increment(by: UInt64(late.count))
            if !self.waitLimitHit {
                self.waitLimitHit = true
                self.loop.noteLimit(self.waitLimitName, hit: true)
            }
            let cause =
                "no stream slot on \(self.peer) within "
                + "\(UpstreamFailure.describe(configuration.upstreamWaitTimeout))"
            for stream in late { stream.upstreamWaitTimedOut(cause) }
        }
        for connection in self.idle.removeExpired(now: now, timeout: configuration.upstreamIdleTimeout)
        where connection.streams.isEmpty {
            self.loop.metrics.limitUpstreamIdleTimeout.increment()
            self.loop.logger.debug(
                "closing idle upstream connection", metadata: ["upstream": "\(self.host):\(self.port)"])
            self.closeGracefully(connection)
        }
        self.scheduleDeadlineCheck()
        self.releaseIfRetiredAndEmpty()
        self.loop.flushDirty()
    }

    /// GOAWAY(NO_ERROR), then close once it is written; the connection takes no new stream
    /// from now on.
    private func closeGracefully(_ connection: UpstreamConnection) {
        self.idle.forget(connection)
        connection.session.terminate(errorCode: H2ErrorCode.noError)
        self.loop.markDirty(connection)
    }

    // MARK: Pruning

    /// The address is no longer wanted (its probe target went away): close idle connections
    /// now and the others once their streams are done. Streams still waiting are served first.
    func retire() {
        guard !self.isRetired else { return }
        self.isRetired = true
        if self.waiting.isEmpty {
            for connection in self.connections where connection.streams.isEmpty {
                self.closeGracefully(connection)
            }
        }
        self.cancelDeadlineCheckIfNothingPending()
        self.releaseIfRetiredAndEmpty()
    }

    /// Whether a retired pool still has anything that refers to it.
    var isDone: Bool {
        self.connections.isEmpty && self.waiting.isEmpty && self.connecting == 0
    }

    private func releaseIfRetiredAndEmpty() {
        guard self.isRetired && self.isDone else { return }
        if self.waitLimitHit {
            self.waitLimitHit = false
            self.loop.noteLimit(self.waitLimitName, hit: false)
        }
        self.loop.retiredPoolDone(self)
    }

}
