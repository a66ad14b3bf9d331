import NIOCore
import NIOHTTP1

extension AdminHandler {
    /// One admin connection's request flow and idle clock, without I/O.
    ///
    /// At most one request is answered at a time (``HTTPServerPipelineHandler`` in front delivers
    /// the next pipelined request only once a response's end is written), and a request that
    /// arrives while the channel is not writable is held until it is: a client that pipelines
    /// requests and never reads costs one response, not one per request. The idle clock closes a
    /// connection after `idleTimeout` without progress from the client: no complete request read
    /// and no response taken off the send buffer. Time spent computing a response is not counted.
    struct StateMachine {
        enum State {
            /// No request in hand.
            case waiting
            /// A request is being answered (computed, or its response being written).
            case answering
            /// The next request, read while a response was written or the channel not writable.
            case held(HTTPRequestHead)
        }

        enum Action {
            case none
            /// Answer this request now.
            case answer(HTTPRequestHead)
            /// A request is held and the channel is writable: answer it on a later event loop tick
            /// (not re-entrantly inside the write that released it).
            case resumeLater
            /// The client broke the one-request-in-flight contract: close the connection.
            case close
        }

        enum TimerAction {
            case rearm(NIODeadline)
            case close
        }

        /// How long a connection may go without progress from the client.
        let idleTimeout: TimeAmount
        private(set) var state = State.waiting
        /// When a request was last read completely or a response last started or finished writing.
        private(set) var lastProgress: NIODeadline

        init(idleTimeout: TimeAmount, now: NIODeadline) {
            self.idleTimeout = idleTimeout
            self.lastProgress = now
        }

        mutating func requestReceived(_ head: HTTPRequestHead, now: NIODeadline, writable: Bool) -> Action {
            self.lastProgress = now
            switch self.state {
            case .waiting:
                if writable {
                    self.state = .answering
                    return .answer(head)
                }
                self.state = .held(head)
                return .none
            case .answering:
                self.state = .held(head)
                return .none
            case .held:
                return .close
            }
        }

        /// The response's head, body and end are about to be written.
        mutating func responseStarted(now: NIODeadline) {
            self.lastProgress = now
        }

        /// The response's end was written and flushed (not necessarily sent).
        mutating func responseFlushed(writable: Bool) -> Action {
            switch self.state {
            case .answering:
                self.state = .waiting
                return .none
            case .held:
                return writable ? .resumeLater : .none
            case .waiting:
                return .none
            }
        }

        /// The channel may have become writable, or a ``Action/resumeLater`` came due.
        mutating func resume(writable: Bool) -> Action {
            guard writable, case .held(let head) = self.state else { return .none }
            self.state = .answering
            return .answer(head)
        }

        /// A response was handed to the socket in full.
        mutating func responseSent(now: NIODeadline) {
            self.lastProgress = now
        }

        mutating func timerFired(now: NIODeadline) -> TimerAction {
            if case .answering = self.state { return .rearm(now + self.idleTimeout) }
            let deadline = self.lastProgress + self.idleTimeout
            return deadline <= now ? .close : .rearm(deadline)
        }
    }
}
