import NIOCore

extension UpstreamPool {
    /// One readiness check of a pool at a time, shared by every caller that asks meanwhile.
    ///
    /// A check sends an empty SETTINGS frame on a ready connection of the pool or, without one,
    /// waits for the pool to finish a connection (TLS and SETTINGS) and sends it there. It ends
    /// when the peer acknowledges it, the connection fails or closes, or the deadline passes; every waiter gets the
    /// same answer. Concurrent `/readyz` requests therefore share one round trip and at most one new
    /// connection.
    struct ReadinessCheck<Connection: AnyObject, Waiter> {
        enum Phase {
            case idle
            /// No ready connection: the pool is opening one.
            case awaitingConnection
            /// An empty SETTINGS went out on `connection`; acknowledged once its SETTINGS ACK count
            /// reaches `ack`.
            case awaitingAck(Connection, ack: Int)
        }

        enum Action {
            case none
            /// The first waiter: arm the deadline, then probe a ready connection or connect.
            case start
            /// Send the empty SETTINGS on this connection (it just became ready).
            case probe(Connection)
            /// The check is over: answer every waiter, disarm the deadline.
            case finish([Waiter], UpstreamReadiness)
        }

        private(set) var phase = Phase.idle
        private var waiters: [Waiter] = []

        /// Whether the pool should open a connection for the check.
        var wantsConnection: Bool {
            if case .awaitingConnection = self.phase { return true }
            return false
        }

        var isRunning: Bool { !self.waiters.isEmpty }

        mutating func begin(_ waiter: Waiter) -> Action {
            self.waiters.append(waiter)
            return self.waiters.count == 1 ? .start : .none
        }

        mutating func awaitConnection() {
            guard self.isRunning else { return }
            self.phase = .awaitingConnection
        }

        mutating func probing(_ connection: Connection, ack: Int) {
            guard self.isRunning else { return }
            self.phase = .awaitingAck(connection, ack: ack)
        }

        mutating func connectionReady(_ connection: Connection) -> Action {
            guard case .awaitingConnection = self.phase else { return .none }
            return .probe(connection)
        }

        /// `connection` has received `acks` SETTINGS ACKs in all.
        mutating func acknowledged(_ connection: Connection, acks: Int, detail: @autoclosure () -> String) -> Action {
            guard case .awaitingAck(let c, let ack) = self.phase, c === connection, acks >= ack else { return .none }
            return self.finish(UpstreamReadiness(isReady: true, detail: detail()))
        }

        /// A connection could not be opened, or closed: fails the check if it was the one
        /// probed, or if the check waits for a connection and this one closed before SETTINGS.
        mutating func connectionFailed(_ connection: Connection, beforeReady: Bool, cause: String) -> Action {
            switch self.phase {
            case .awaitingConnection where beforeReady:
                return self.finish(UpstreamReadiness(isReady: false, detail: cause))
            case .awaitingAck(let c, _) where c === connection:
                return self.finish(UpstreamReadiness(isReady: false, detail: "\(cause) before acknowledging SETTINGS"))
            default:
                return .none
            }
        }

        mutating func deadlinePassed(upstream: String, deadline: String) -> Action {
            switch self.phase {
            case .idle:
                guard self.isRunning else { return .none }
                return self.finish(
                    UpstreamReadiness(
                        isReady: false,
                        detail: "no connection to upstream \(upstream) could be opened within \(deadline)"))
            case .awaitingConnection:
                return self.finish(
                    UpstreamReadiness(
                        isReady: false,
                        detail:
                            "upstream \(upstream) did not complete the connection (TCP, TLS, HTTP/2 SETTINGS) within \(deadline)"
                    ))
            case .awaitingAck:
                return self.finish(
                    UpstreamReadiness(
                        isReady: false,
                        detail:
                            "upstream \(upstream) did not acknowledge an HTTP/2 SETTINGS frame within \(deadline) (it does not read: frozen or overloaded?)"
                    ))
            }
        }

        private mutating func finish(_ answer: UpstreamReadiness) -> Action {
            let waiters = self.waiters
            self.waiters.removeAll()
            self.phase = .idle
            return .finish(waiters, answer)
        }
    }
}

extension UpstreamPool {
    /// Answers whether this pool's upstream takes calls: an empty SETTINGS frame on a ready
    /// connection of the pool (opening one if there is none) answered within `deadline`. Callers that ask while a
    /// check runs get its answer. Runs on the pool's loop and never blocks it.
    func checkReadiness(deadline: TimeAmount) -> EventLoopFuture<UpstreamReadiness> {
        let promise = self.loop.eventLoop.makePromise(of: UpstreamReadiness.self)
        guard case .start = self.readinessCheck.begin(promise) else { return promise.futureResult }
        let started = NIODeadline.now()
        let upstream = "\(self.host):\(self.port)"
        // Through a TimerTarget: a pending timer must not keep a pool alive (nor reference it
        // weakly: see TimerTarget).
        self.readinessTimer = self.loop.eventLoop.assumeIsolated().scheduleTask(in: deadline) {
            [timerTarget = self.timerTarget] in
            guard let self = timerTarget.current else { return }
            self.readinessTimer = nil
            self.readinessEvent(
                self.readinessCheck.deadlinePassed(upstream: upstream, deadline: UpstreamFailure.describe(deadline)))
        }
        self.readinessStarted = started
        if let connection = self.connections.first(where: { $0.state == .ready }) {
            self.sendReadinessProbe(on: connection)
        } else {
            self.readinessCheck.awaitConnection()
            self.connectIfNeeded()
        }
        self.loop.flushDirty()
        return promise.futureResult
    }

    /// A connection read SETTINGS ACKs: the check may be answered.
    func settingsAcknowledged(on connection: UpstreamConnection) {
        guard self.readinessCheck.isRunning else { return }
        let started = self.readinessStarted
        let upstream = "\(self.host):\(self.port)"
        self.readinessEvent(
            self.readinessCheck.acknowledged(
                connection, acks: connection.session.settingsAcksReceived,
                detail: "upstream \(upstream) acknowledged an HTTP/2 SETTINGS frame in "
                    + "\((NIODeadline.now() - started).nanoseconds / 1_000_000) ms"))
    }

    func readinessEvent(_ action: ReadinessCheck<UpstreamConnection, EventLoopPromise<UpstreamReadiness>>.Action) {
        switch action {
        case .none, .start:
            break
        case .probe(let connection):
            self.sendReadinessProbe(on: connection)
        case .finish(let waiters, let answer):
            self.readinessTimer?.cancel()
            self.readinessTimer = nil
            for waiter in waiters { waiter.succeed(answer) }
        }
    }

    private func sendReadinessProbe(on connection: UpstreamConnection) {
        connection.session.submitEmptySettings()
        self.readinessCheck.probing(connection, ack: connection.session.settingsSent)
        self.loop.markDirty(connection)
    }
}
