extension TLSHandler {
    /// The life of one TLS connection, without I/O: what to do on each event.
    struct StateMachine {
        enum State: Equatable {
            case idle
            /// `receivedBytes`: whether the peer sent anything yet (a bare TCP connect-and-close,
            /// like a port probe, is not a failed handshake).
            case handshaking(receivedBytes: Bool)
            /// `receivedData`: whether application data arrived yet (TLS 1.3 reports a rejected
            /// client certificate only after the client's handshake is done).
            case established(receivedData: Bool)
            case closed
        }

        private(set) var state: State = .idle
        let isClient: Bool

        init(isClient: Bool) {
            self.isClient = isClient
        }

        enum ActiveAction: Equatable {
            /// Client: send the ClientHello. Server: wait for it. Either way, arm the timeout.
            case startHandshake
            case none
        }

        mutating func channelActive() -> ActiveAction {
            guard self.state == .idle else { return .none }
            self.state = .handshaking(receivedBytes: false)
            return .startHandshake
        }

        mutating func bytesReceived() {
            if case .handshaking = self.state { self.state = .handshaking(receivedBytes: true) }
        }

        enum HandshakeAction: Equatable {
            /// Encrypt and send the writes buffered during the handshake.
            case flushBufferedWrites
            case fail(TLSHandshakeFailure)
        }

        mutating func handshakeCompleted(negotiatedProtocol: String?) -> HandshakeAction {
            guard negotiatedProtocol == "h2" else {
                return self.failed(
                    TLSHandshakeFailure(
                        reason: .noApplicationProtocol,
                        detail:
                            "peer agreed on \(negotiatedProtocol.map { "ALPN \($0)" } ?? "no ALPN protocol"), not h2"))
            }
            self.state = .established(receivedData: false)
            return .flushBufferedWrites
        }

        mutating func handshakeFailed(_ failure: TLSHandshakeFailure) -> HandshakeAction {
            self.failed(failure)
        }

        private mutating func failed(_ failure: TLSHandshakeFailure) -> HandshakeAction {
            self.state = .closed
            return .fail(failure)
        }

        enum ReadFailureAction: Equatable {
            /// Count it as a handshake failure: the peer refused us right after the handshake.
            case failHandshake(TLSHandshakeFailure)
            case close(TLSHandshakeFailure)
        }

        mutating func readFailed(_ failure: TLSHandshakeFailure) -> ReadFailureAction {
            let early = self.state == .established(receivedData: false)
            self.state = .closed
            return early ? .failHandshake(failure) : .close(failure)
        }

        mutating func dataReceived() {
            if self.state == .established(receivedData: false) { self.state = .established(receivedData: true) }
        }

        enum WriteAction: Equatable {
            case buffer
            case encrypt
            case drop
        }

        func write() -> WriteAction {
            switch self.state {
            case .idle, .handshaking: return .buffer
            case .established: return .encrypt
            case .closed: return .drop
            }
        }

        var isEstablished: Bool {
            if case .established = self.state { return true }
            return false
        }

        enum InactiveAction: Equatable {
            case fail(TLSHandshakeFailure)
            case none
        }

        /// The TCP connection closed.
        mutating func channelInactive() -> InactiveAction {
            defer { self.state = .closed }
            if self.isClient && self.state == .established(receivedData: false) {
                // An HTTP/2 server speaks first (SETTINGS): closing before that, right after a
                // TLS 1.3 handshake, is how a server rejects our client certificate without an alert.
                return .fail(
                    TLSHandshakeFailure(
                        reason: .truncated,
                        detail:
                            "upstream closed the connection right after the handshake (client certificate rejected?)"
                    ))
            }
            guard case .handshaking(let received) = self.state else { return .none }
            // An upstream closing on our ClientHello is always a failure; a client that connects
            // and leaves without a byte is not.
            guard received || self.isClient else { return .none }
            return .fail(TLSHandshakeFailure(reason: .truncated, detail: "connection closed during the handshake"))
        }

        mutating func handshakeTimedOut() -> InactiveAction {
            guard case .handshaking = self.state else { return .none }
            self.state = .closed
            return .fail(TLSHandshakeFailure(reason: .timeout, detail: "no complete handshake in time"))
        }
    }
}
