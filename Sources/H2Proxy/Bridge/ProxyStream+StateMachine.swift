import NIOCore

extension ProxyStream {
    /// The bridge between one client stream and its upstream stream, as a pure state machine.
    ///
    /// Events from both sides go in; what to do on the sessions comes out. It owns the
    /// flow-control bookkeeping of the stream: every DATA byte received on one side gives its
    /// window back on that side exactly once, either when the other side has written it or
    /// when it can never be written. It never touches a session, a channel or a clock, so it
    /// can be driven by tests with random event sequences (`ProxyStreamStateMachineTests`).
    ///
    /// The lifecycle is ``State``; within it, the request and the response each have a phase.
    /// A GOAWAY from the upstream reaches the machine as ``upstreamClosed(errorCode:)`` with
    /// REFUSED_STREAM (nghttp2 closes the streams above the GOAWAY's last stream ID that way, and
    /// the requests it had not sent yet). A lost connection (``upstreamConnectionLost(_:_:)``)
    /// replays the stream too when the upstream provably did not process it: its request HEADERS
    /// never left the proxy, or its ID is above the GOAWAY's last stream ID.
    struct StateMachine {
        enum State: Equatable {
            /// Queued in the upstream pool: no upstream stream yet; request DATA is buffered.
            case waitingForUpstream
            /// Both the client stream and the upstream stream are open.
            case open(upstreamID: Int32)
            /// The client stream is closed; the upstream stream is open until its close arrives
            /// (after the reset the machine asked for, or after it finishes on its own).
            case downstreamClosed(upstreamID: Int32)
            /// The upstream stream is closed or will never open; the client stream is open until
            /// its close arrives (after the response, the fault or the reset in flight to it).
            case upstreamClosed
            /// Both sides are closed and the end was reported.
            case closed
        }

        /// Final response HEADERS forwarded (`started`); END_STREAM forwarded to the client, or
        /// a fault written in its place (`ended`).
        typealias ResponsePhase = ResponseProgress.Phase

        /// What the proxy writes to the client in place of an upstream answer.
        enum Fault: Equatable {
            /// gRPC: a Trailers-Only response with `grpc-status: 14` (UNAVAILABLE).
            case grpcTrailersOnly(String)
            /// gRPC after the response started: trailers with `grpc-status: 14`.
            case grpcTrailers(String)
            /// Plain HTTP: a response with this status (502 or 503) and the cause as its body.
            case http(status: Int, String)
            /// The request was too large for the upstream: gRPC Trailers-Only `grpc-status: 8`
            /// (RESOURCE_EXHAUSTED), plain HTTP 431, with the cause.
            case requestTooLarge(String)
        }

        /// Side effects of an event that closes or fails something. Every field is something to
        /// carry out; zero and `nil` mean nothing.
        struct Effects: Equatable {
            /// Give this many bytes of window back to the client connection (and stream).
            var consumeDownstream = 0
            /// Give this many bytes of window back to the upstream connection (and stream).
            var consumeUpstream = 0
            /// RST_STREAM the client stream with this code.
            var resetDownstream: UInt32?
            /// RST_STREAM the upstream stream with this code.
            var resetUpstream: UInt32?
            /// Answer the client on the proxy's behalf.
            var fault: Fault?
            /// Take the stream out of the pool's wait queue.
            var cancelWaiting = false
            /// Queue the stream in the pool again, to replay it on another upstream stream.
            var retry = false
            /// A reset from the client (`downstream`) or from the upstream (`upstream`) to count.
            var resetReceived: Side?
            /// The stream is over on both sides: report it (exactly once per stream).
            var finished: StreamEndReason?
        }

        enum Side: Equatable { case downstream, upstream }

        enum AttachAction {
            /// Submit the request on the upstream connection; report the result with
            /// ``upstreamOpened(streamID:)`` or ``upstreamOpenFailed(_:)``.
            case submit(HeaderBlock, endStream: Bool)
            /// The stream is over: nothing to open.
            case none
        }

        /// What to send right after the upstream stream opened: the DATA that arrived meanwhile,
        /// then END_STREAM (with trailers) if the request ended.
        struct OpenedAction {
            var pending: CircularBuffer<ByteBuffer>
            var end: Bool
            var trailers: HeaderBlock?
        }

        enum DataAction: Equatable {
            /// Queue the chunk on the other side's stream.
            case forward
            /// Kept until the upstream stream opens.
            case buffer
            /// Nowhere to go: give the window back on the receiving side at once.
            case discard
        }

        enum ResponseHeadersAction: Equatable {
            /// A 1xx response: pass it on.
            case interim
            /// The final response headers (END_STREAM: a Trailers-Only response).
            case response(endStream: Bool)
            /// The response's trailers: end the client stream with them.
            case trailers
            /// Not a response: reset the client stream.
            case resetDownstream(UInt32)
            case none
        }

        static let retainedForRetryLimit = 64 << 10

        private(set) var isGRPC = false
        private(set) var maxRetries = 0
        private(set) var state: State = .waitingForUpstream
        /// The response's phase and the meaning of each HEADERS block, shared with ``LocalCall``.
        private var progress = ResponseProgress()
        var response: ResponsePhase { self.progress.phase }

        /// The request as forwarded, kept for a replay until the response starts or more than
        /// ``retainedForRetryLimit`` bytes were written.
        private var request: HeaderBlock?
        /// ``request`` once no replay can need it, until the stream takes it back to reuse
        /// (``takeRetiredRequest()``).
        private var retiredRequest: HeaderBlock?
        private(set) var requestEnded = false
        private var requestTrailers: HeaderBlock?
        /// Whether END_STREAM went to the upstream session with the request headers.
        private var submittedWithEnd = false
        /// Request DATA received and not yet written upstream, oldest first. The same buffers
        /// are queued in the upstream session while the stream is open.
        /// Starts as a copy of ``noRequestData``, so a request without a body allocates no queue.
        private var pendingRequestData = Self.noRequestData
        /// The empty queue every stream starts with, shared until the first DATA copies it.
        private static let noRequestData = CircularBuffer<ByteBuffer>(initialCapacity: 2)
        /// Request DATA already written upstream, kept for a replay.
        private var writtenRequestData: [ByteBuffer] = []
        private var writtenRequestBytes = 0
        /// Bytes of a replay that already gave their window back to the client once.
        private(set) var replayCredit = 0
        private(set) var retries = 0
        /// Whether the upstream session serialised the current attempt's request HEADERS: until
        /// then, the upstream cannot have seen the request.
        private(set) var requestHeadersSent = false

        /// Request bytes received whose client window is not given back yet.
        private(set) var unreleasedRequestBytes = 0
        /// Response bytes received whose upstream window is not given back yet.
        private(set) var unreleasedResponseBytes = 0

        /// Whether the client / upstream connection still exists (window updates still matter).
        private(set) var downstreamConnectionAlive = true
        private(set) var upstreamConnectionAlive = false
        private var resetDownstreamByProxy = false
        private var resetUpstreamByProxy = false
        private var endReason: StreamEndReason?

        init(request: HeaderBlock, endStream: Bool, isGRPC: Bool, maxRetries: Int) {
            self.start(request: request, endStream: endStream, isGRPC: isGRPC, maxRetries: maxRetries)
        }

        /// A machine with no request yet: ``start(request:endStream:isGRPC:maxRetries:)`` gives it
        /// one. A stream starts its machine in place this way, since building the machine first
        /// and storing it made the compiler copy it (four retains and four releases per stream).
        init() {}

        /// The stream's request arrived (`endStream`: with END_STREAM).
        mutating func start(request: consuming HeaderBlock, endStream: Bool, isGRPC: Bool, maxRetries: Int) {
            self.request = consume request
            self.requestEnded = endStream
            self.isGRPC = isGRPC
            self.maxRetries = maxRetries
        }

        var isClosed: Bool { self.state == .closed }

        var upstreamID: Int32? {
            switch self.state {
            case .open(let id), .downstreamClosed(let id): id
            default: nil
            }
        }

        private var downstreamOpen: Bool {
            switch self.state {
            case .waitingForUpstream, .open, .upstreamClosed: true
            case .downstreamClosed, .closed: false
            }
        }

        // MARK: Opening the upstream stream

        /// The pool picked a connection for the stream.
        mutating func attach() -> AttachAction {
            guard self.state == .waitingForUpstream, let request = self.request else { return .none }
            let end = self.requestEnded && self.pendingRequestData.isEmpty && self.requestTrailers == nil
            self.submittedWithEnd = end
            return .submit(request, endStream: end)
        }

        /// The upstream session took the stream. `nil`: the stream is no longer waiting (the
        /// new upstream stream must be reset).
        mutating func upstreamOpened(streamID: Int32) -> OpenedAction? {
            guard self.state == .waitingForUpstream else { return nil }
            self.state = .open(upstreamID: streamID)
            self.upstreamConnectionAlive = true
            self.resetUpstreamByProxy = false
            return OpenedAction(
                pending: self.pendingRequestData, end: self.requestEnded && !self.submittedWithEnd,
                trailers: self.requestTrailers)
        }

        /// The upstream session would not take the stream; or the pool could not get a
        /// connection (`status` 502), or none had room in time (`status` 503).
        mutating func upstreamUnavailable(_ cause: String, status: Int = 502) -> Effects {
            guard self.state == .waitingForUpstream else { return Effects() }
            var effects = Effects()
            self.releaseRequest(into: &effects)
            self.state = .upstreamClosed
            self.writeFault(cause, status: status, into: &effects)
            self.noteReason(.upstreamUnavailable(cause, status: status))
            return effects
        }

        /// The request's headers are over the upstream's advertised header list limit: it is
        /// not sent, and not retried (another connection to the same upstream would refuse it too).
        mutating func requestTooLargeForUpstream(_ cause: String) -> Effects {
            guard self.state == .waitingForUpstream else { return Effects() }
            var effects = Effects()
            self.releaseRequest(into: &effects)
            self.state = .upstreamClosed
            if self.downstreamOpen, self.response != .ended {
                self.progress.end()
                effects.fault = .requestTooLarge(cause)
            }
            self.noteReason(.requestTooLarge(cause))
            return effects
        }

        // MARK: Request direction

        /// The upstream session serialised the request HEADERS of the current attempt.
        mutating func requestHeadersWritten() {
            guard case .open = self.state else { return }
            self.requestHeadersSent = true
        }

        mutating func requestData(_ chunk: ByteBuffer) -> DataAction {
            let n = chunk.readableBytes
            switch self.state {
            case .waitingForUpstream where !self.requestEnded:
                self.unreleasedRequestBytes += n
                self.pendingRequestData.appendWaitingChunk(chunk)
                return .buffer
            case .open where !self.requestEnded:
                self.unreleasedRequestBytes += n
                self.pendingRequestData.appendWaitingChunk(chunk)
                return .forward
            default:
                return .discard
            }
        }

        /// The request ended (END_STREAM, with `trailers` if any). Returns whether to end the
        /// upstream stream now.
        mutating func requestEnd(trailers: HeaderBlock?) -> Bool {
            guard !self.requestEnded else { return false }
            self.requestEnded = true
            self.requestTrailers = trailers.flatMap { $0.isEmpty ? nil : $0 }
            if case .open = self.state { return true }
            return false
        }

        /// The upstream session wrote `bytes` of this stream's request DATA. Returns the bytes
        /// whose window to give back to the client.
        mutating func requestDataWritten(_ bytes: Int) -> Int {
            guard case .open = self.state else { return 0 }
            let keep = self.request != nil && self.writtenRequestBytes + bytes <= Self.retainedForRetryLimit
            var remaining = bytes
            while remaining > 0, var first = self.pendingRequestData.popFirst() {
                if first.readableBytes > remaining {
                    if keep {
                        self.writtenRequestData.appendWaitingChunk(first.readSlice(length: remaining)!)
                    } else {
                        first.moveReaderIndex(forwardBy: remaining)
                    }
                    self.pendingRequestData.prepend(first)
                    remaining = 0
                } else {
                    remaining -= first.readableBytes
                    if keep { self.writtenRequestData.appendWaitingChunk(first) }
                }
            }
            if keep {
                self.writtenRequestBytes += bytes
            } else {
                self.stopRetaining()
            }
            let replayed = min(bytes, self.replayCredit)
            self.replayCredit -= replayed
            let fresh = min(bytes - replayed, self.unreleasedRequestBytes)
            self.unreleasedRequestBytes -= fresh
            return self.downstreamConnectionAlive ? fresh : 0
        }

        // MARK: Response direction

        mutating func responseHeaders(kind: HeadersKind, endStream: Bool) -> ResponseHeadersAction {
            guard self.downstreamOpen else { return .none }
            switch self.progress.headers(kind: kind, endStream: endStream) {
            case .interim:
                return .interim
            case .response(let endStream):
                self.stopRetaining(forReuse: true)
                return .response(endStream: endStream)
            case .trailers:
                return .trailers
            case .protocolError:
                self.resetDownstreamByProxy = true
                return .resetDownstream(H2ErrorCode.protocolError)
            case .ignore:
                return .none
            }
        }

        mutating func responseData(_ chunk: ByteBuffer) -> DataAction {
            guard self.downstreamOpen, self.response == .started else { return .discard }
            self.unreleasedResponseBytes += chunk.readableBytes
            return .forward
        }

        /// END_STREAM on a DATA frame from upstream. Returns whether to end the client stream.
        mutating func responseEnd() -> Bool {
            guard self.downstreamOpen else { return false }
            return self.progress.dataEnded()
        }

        /// The client session wrote `bytes` of this stream's response DATA. Returns the bytes
        /// whose window to give back to the upstream.
        mutating func responseDataWritten(_ bytes: Int) -> Int {
            let n = min(bytes, self.unreleasedResponseBytes)
            self.unreleasedResponseBytes -= n
            return self.upstreamConnectionAlive ? n : 0
        }

        // MARK: Closing

        /// The client stream closed: cleanly (`errorCode` 0), by a reset, or with its connection.
        mutating func downstreamClosed(errorCode: UInt32, connectionLost: Bool) -> Effects {
            var effects = Effects()
            guard self.downstreamOpen else { return effects }
            if errorCode != 0 && !connectionLost && !self.resetDownstreamByProxy { effects.resetReceived = .downstream }
            if connectionLost { self.downstreamConnectionAlive = false }
            // Response bytes that will never be written: give the upstream window back.
            if self.upstreamConnectionAlive { effects.consumeUpstream = self.unreleasedResponseBytes }
            self.unreleasedResponseBytes = 0
            let unsentRequest = !self.pendingRequestData.isEmpty || !self.requestEnded
            self.releaseRequest(into: &effects)
            let reason: StreamEndReason =
                errorCode == 0 && self.response == .ended ? .completed : .downstreamReset(errorCode)
            switch self.state {
            case .waitingForUpstream:
                effects.cancelWaiting = true
                self.state = .closed
                self.finish(reason, into: &effects)
            case .open(let id):
                if self.response != .ended || errorCode != 0 || unsentRequest {
                    // The client is gone or will never see more: stop the upstream stream.
                    self.resetUpstreamByProxy = true
                    effects.resetUpstream =
                        errorCode == 0 ? H2ErrorCode.cancel : ProxyStream.mapResetCode(errorCode)
                }
                self.state = .downstreamClosed(upstreamID: id)
                self.noteReason(reason)
            case .upstreamClosed:
                self.state = .closed
                self.finish(reason, into: &effects)
            case .downstreamClosed, .closed:
                break
            }
            return effects
        }

        /// The upstream stream closed: cleanly (`errorCode` 0) or by a reset. `refusedCause` is
        /// the message for a stream refused on every attempt (made only then).
        mutating func upstreamClosed(
            errorCode: UInt32, refusedCause: @autoclosure () -> String = "upstream refused the stream"
        ) -> Effects {
            var effects = Effects()
            switch self.state {
            case .open:
                if self.mayReplay(closedWith: errorCode) {
                    self.prepareReplay()
                    effects.retry = true
                    return effects
                }
                if errorCode != 0 && !self.resetUpstreamByProxy { effects.resetReceived = .upstream }
                let retriesExhausted = self.request != nil
                self.releaseRequest(into: &effects)
                self.state = .upstreamClosed
                if errorCode == H2ErrorCode.refusedStream && self.response == .notStarted && retriesExhausted {
                    // Refused on every attempt: answer, rather than have the client retry again.
                    let cause = refusedCause()
                    self.writeFault(cause, status: 502, into: &effects)
                    self.noteReason(.upstreamUnavailable(cause))
                } else if self.response != .ended {
                    self.progress.end()
                    self.resetDownstreamByProxy = true
                    if errorCode == 0 {
                        // Closed without ending the response: the client must not take it as whole.
                        effects.resetDownstream = H2ErrorCode.internalError
                    } else if errorCode == H2ErrorCode.refusedStream && self.response == .notStarted {
                        // Not processed upstream and not replayable here: let the client retry.
                        effects.resetDownstream = H2ErrorCode.refusedStream
                    } else {
                        effects.resetDownstream = ProxyStream.mapResetCode(errorCode)
                    }
                }
                self.noteReason(errorCode == 0 ? .completed : .upstreamReset(errorCode))
            case .downstreamClosed:
                if errorCode != 0 && !self.resetUpstreamByProxy { effects.resetReceived = .upstream }
                self.state = .closed
                // A close with the code of the proxy's own reset is not the upstream's doing.
                let byUpstream = errorCode != 0 && !self.resetUpstreamByProxy
                self.finish(byUpstream ? .upstreamReset(errorCode) : .completed, into: &effects)
            case .waitingForUpstream, .upstreamClosed, .closed:
                break
            }
            return effects
        }

        /// The upstream connection is gone (the stream's close will not arrive). A stream the
        /// upstream provably did not process (``UpstreamLoss``) is replayed like a refused one.
        mutating func upstreamConnectionLost(_ cause: String, _ loss: UpstreamLoss = .connectionLost) -> Effects {
            var effects = Effects()
            switch self.state {
            case .open:
                if loss.provesUnprocessed(requestHeadersSent: self.requestHeadersSent),
                    self.mayReplay(closedWith: H2ErrorCode.refusedStream)
                {
                    self.prepareReplay()
                    effects.retry = true
                    return effects
                }
                self.upstreamConnectionAlive = false
                self.unreleasedResponseBytes = 0
                self.releaseRequest(into: &effects)
                self.state = .upstreamClosed
                if self.response == .ended {
                    self.noteReason(.completed)
                } else {
                    self.writeFault(cause, status: 502, into: &effects)
                    self.noteReason(.upstreamUnavailable(cause))
                }
            case .downstreamClosed:
                self.upstreamConnectionAlive = false
                self.state = .closed
                self.finish(.completed, into: &effects)
            case .upstreamClosed:
                // The stream had closed already; response bytes still being written to the
                // client have no window left to give back.
                self.upstreamConnectionAlive = false
            case .waitingForUpstream, .closed:
                break
            }
            return effects
        }

        // MARK: Helpers

        /// Replayable by ``ResponseProgress/mayReplay(closedWith:retries:maxRetries:)``, with the
        /// request still retained and the client still there.
        private func mayReplay(closedWith errorCode: UInt32) -> Bool {
            self.request != nil && self.downstreamOpen
                && self.progress.mayReplay(closedWith: errorCode, retries: self.retries, maxRetries: self.maxRetries)
        }

        private mutating func prepareReplay() {
            self.retries += 1
            for chunk in self.writtenRequestData.reversed() { self.pendingRequestData.prepend(chunk) }
            self.replayCredit += self.writtenRequestBytes
            self.writtenRequestData.removeAll()
            self.writtenRequestBytes = 0
            self.upstreamConnectionAlive = false
            self.requestHeadersSent = false
            self.state = .waitingForUpstream
        }

        /// The request block, once the response started and no replay can need it: the stream
        /// gives it to the client's session to decode a later request into. `nil` after the first call.
        mutating func takeRetiredRequest() -> HeaderBlock? {
            guard self.retiredRequest != nil else { return nil }
            var block: HeaderBlock? = nil
            swap(&block, &self.retiredRequest)
            return block
        }

        /// `forReuse`: keep the request block for ``takeRetiredRequest()`` (when the response
        /// starts, and the stream takes it at once).
        private mutating func stopRetaining(forReuse: Bool = false) {
            if forReuse && self.request != nil { swap(&self.request, &self.retiredRequest) }
            self.request = nil
            if !self.writtenRequestData.isEmpty { self.writtenRequestData.removeAll() }
            self.writtenRequestBytes = 0
        }

        /// Request bytes that will never be written upstream: give the client's window back.
        private mutating func releaseRequest(into effects: inout Effects) {
            if self.downstreamConnectionAlive { effects.consumeDownstream += self.unreleasedRequestBytes }
            self.unreleasedRequestBytes = 0
            self.replayCredit = 0
            // Emptied in place: `removeAll()` would allocate a fresh buffer on every stream end.
            self.pendingRequestData.removeAll(keepingCapacity: true)
            self.stopRetaining()
        }

        private mutating func writeFault(_ cause: String, status: Int, into effects: inout Effects) {
            guard self.downstreamOpen, self.response != .ended else { return }
            let started = self.response == .started
            self.progress.end()
            if self.isGRPC {
                effects.fault = started ? .grpcTrailers(cause) : .grpcTrailersOnly(cause)
            } else if !started {
                effects.fault = .http(status: status, cause)
            } else {
                self.resetDownstreamByProxy = true
                effects.resetDownstream = H2ErrorCode.internalError
            }
        }

        private mutating func noteReason(_ reason: StreamEndReason) {
            if self.endReason == nil || self.endReason == .completed { self.endReason = reason }
        }

        private mutating func finish(_ reason: StreamEndReason, into effects: inout Effects) {
            self.noteReason(reason)
            effects.finished = self.endReason ?? reason
        }
    }
}
