import NIOCore

extension DownstreamConnection {
    /// The timers of one client connection, as a pure state machine: the ProxyLoop's
    /// housekeeping tick asks it what to do.
    struct Limits {
        enum Action: Equatable {
            case none
            /// No connection preface and SETTINGS within the preface timeout (slowloris).
            case closePrefaceTimeout
            /// No stream for the idle timeout: GOAWAY, then close.
            case goAwayIdle
            /// Older than the maximum connection age: graceful GOAWAY.
            case goAwayMaxAge
        }

        let openedAt: NIODeadline
        var prefaceDone = false
        var lastActive: NIODeadline
        var goAwayStarted = false

        init(now: NIODeadline) {
            self.openedAt = now
            self.lastActive = now
        }

        mutating func check(now: NIODeadline, openStreams: Int, configuration: ProxyConfiguration) -> Action {
            if !self.prefaceDone {
                return now - self.openedAt >= configuration.prefaceTimeout ? .closePrefaceTimeout : .none
            }
            guard !self.goAwayStarted else { return .none }
            if openStreams > 0 { self.lastActive = now }
            if let age = configuration.maxConnectionAge, now - self.openedAt >= age {
                self.goAwayStarted = true
                return .goAwayMaxAge
            }
            if openStreams == 0, now - self.lastActive >= configuration.idleTimeout {
                self.goAwayStarted = true
                return .goAwayIdle
            }
            return .none
        }
    }
}
