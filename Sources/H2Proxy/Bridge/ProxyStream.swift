import NIOCore

/// One client stream bridged to one upstream stream.
///
/// Every decision is made by ``StateMachine``; this class carries its actions out on the two
/// sessions, feeds the observer and the counters. It holds both connections strongly: each
/// connection holds it only while the stream is open on that side, so the stream never
/// outlives both connections and never reads a connection that is gone.
final class ProxyStream: DownstreamStream, UpstreamStream {
    let downstream: DownstreamConnection
    let downstreamID: Int32
    let loop: ProxyLoop
    /// The upstream connection of the current attempt, kept after the upstream stream closed
    /// (response bytes still being written give their window back to it).
    private(set) var upstream: UpstreamConnection?
    private(set) var upstreamID: Int32 = 0
    let isGRPC: Bool
    /// Called as `self.observer?.event(…)`: `if let observer = self.observer` copied the
    /// reference out, a retain and a release around every call.
    let observer: StreamObserver?
    /// The observer's ``StreamObserver/wantsDataTimes``: whether a DATA chunk reads the clock.
    private let observerWantsDataTimes: Bool
    let receivedAt: NIODeadline
    private(set) var machine = StateMachine()
    private var requestFramer = GRPCMessageFraming()
    private var responseFramer = GRPCMessageFraming()

    var pool: UpstreamPool { self.loop.pool }

    /// `request` is the block as received, owned by the stream alone: it is edited in place
    /// (hop-by-hop fields out, timing headers in) into the request that goes upstream.
    init(
        downstream: DownstreamConnection, streamID: Int32, request: consuming HeaderBlock, endStream: Bool,
        receivedAt: NIODeadline
    ) {
        self.downstream = downstream
        self.downstreamID = streamID
        self.loop = downstream.loop
        self.receivedAt = receivedAt
        let isGRPC = request.isGRPC
        self.isGRPC = isGRPC
        // Straight into the property (a local copy was one more retain and release).
        self.observer = downstream.loop.observerSource?.makeObserver(for: request)
        self.observerWantsDataTimes = self.observer?.wantsDataTimes ?? false
        HopByHopHeaders.strip(&request)
        self.observer?.requestHeadersWillForward(&request, receivedAt: receivedAt)
        self.machine.start(
            request: consume request, endStream: endStream, isGRPC: isGRPC,
            maxRetries: downstream.loop.configuration.maxRetries)
    }

    // MARK: Attaching to an upstream connection

    /// Opens the upstream stream on `connection` and sends what arrived meanwhile.
    func attach(to connection: UpstreamConnection) {
        guard case .submit(let request, let endStream) = self.machine.attach() else { return }
        // nghttp2 would send a header list over the upstream's advertised limit, and a peer may
        // answer that by closing the connection every other stream shares.
        let limit = connection.session.peerMaxHeaderListSize
        let size = request.listSize
        if size > limit {
            self.loop.metrics.headerListTooLarge.increment()
            self.perform(
                self.machine.requestTooLargeForUpstream(
                    self.prefixed(
                        "request header list of \(size) bytes (with this sidecar's fields) is over the upstream's "
                            + "SETTINGS_MAX_HEADER_LIST_SIZE of \(limit)")))
            return
        }
        let id: Int32
        do {
            id = try connection.session.submitRequest(request, endStream: endStream)
        } catch {
            self.perform(self.machine.upstreamUnavailable(self.prefixed("upstream rejected stream: \(error)")))
            return
        }
        guard let opened = self.machine.upstreamOpened(streamID: id) else {
            connection.resetStream(id, errorCode: H2ErrorCode.cancel)
            return
        }
        self.upstream = connection
        self.upstreamID = id
        connection.streams[id] = self
        for chunk in opened.pending { connection.session.sendData(streamID: id, chunk) }
        if opened.end { connection.session.endStream(streamID: id, trailers: opened.trailers) }
        self.loop.markDirty(connection)
    }

    // MARK: Request direction (downstream → upstream)

    func requestData(_ chunk: ByteBuffer) {
        let n = chunk.readableBytes
        self.loop.metrics.requestBytes.increment(by: UInt64(n), shard: self.loop.shard)
        if self.observer != nil {
            let messages = self.isGRPC ? self.requestFramer.consume(chunk) : 0
            self.observer?.dataReceived(.request, bytes: n, messages: messages, at: self.dataReceivedTime())
        }
        switch self.machine.requestData(chunk) {
        case .forward:
            guard let upstream = self.upstream else { return }
            upstream.session.sendData(streamID: self.upstreamID, chunk)
            self.loop.markDirty(upstream)
        case .buffer:
            break
        case .discard:
            self.downstream.consume(streamID: self.downstreamID, bytes: n)
        }
    }

    func requestEnd(trailers: HeaderBlock?) {
        var trailers = trailers
        if var t = trailers {
            HopByHopHeaders.strip(&t)
            trailers = t
        }
        if self.machine.requestEnd(trailers: trailers), let upstream = self.upstream {
            upstream.session.endStream(streamID: self.upstreamID, trailers: trailers)
            self.loop.markDirty(upstream)
        }
    }

    /// The upstream session serialised the request HEADERS of the current attempt: "sent".
    func requestHeadersWritten(at sentAt: NIODeadline) {
        guard !self.machine.isClosed else { return }
        self.machine.requestHeadersWritten()
        self.observer?.requestHeadersSent(at: sentAt)
    }

    /// The upstream connection wrote `bytes` of this stream's request DATA.
    func requestDataWritten(_ bytes: Int) {
        let release = self.machine.requestDataWritten(bytes)
        if release > 0 {
            self.downstream.consume(streamID: self.downstreamID, bytes: release)
        }
    }

    // MARK: Response direction (upstream → downstream)

    func responseHeaders(_ headers: consuming HeaderBlock, kind: HeadersKind, endStream: Bool) {
        let action = self.machine.responseHeaders(kind: kind, endStream: endStream)
        if case .none = action { return }
        HopByHopHeaders.strip(&headers)
        let session = self.downstream.session
        switch action {
        case .interim:
            try? session.submitInterimHeaders(streamID: self.downstreamID, headers)
        case .response(let endStream):
            if self.observer != nil {
                let firstByte = self.loop.clock.firstByte()
                if endStream {
                    self.observer?.trailersWillForward(&headers, trailersOnly: true, receivedAt: firstByte)
                } else {
                    self.observer?.responseHeadersWillForward(&headers, at: firstByte)
                }
            }
            do {
                try session.submitResponse(streamID: self.downstreamID, headers, endStream: endStream)
            } catch {
                self.downstream.resetStream(self.downstreamID, errorCode: H2ErrorCode.internalError)
            }
            // nghttp2 copied the fields: the upstream session decodes its next block into this one,
            // and the client's session its next request into the request's, which no replay needs now.
            self.upstream?.session.recycle(consume headers)
            if let request = self.machine.takeRetiredRequest() { session.recycle(request) }
        case .trailers:
            self.observer?.trailersWillForward(&headers, trailersOnly: false, receivedAt: self.loop.clock.responseEnd())
            session.endStream(streamID: self.downstreamID, trailers: headers.isEmpty ? nil : headers)
        case .resetDownstream(let code):
            self.downstream.resetStream(self.downstreamID, errorCode: code)
        case .none:
            break
        }
        self.loop.markDirty(self.downstream)
    }

    func responseData(_ chunk: ByteBuffer) {
        let n = chunk.readableBytes
        self.loop.metrics.responseBytes.increment(by: UInt64(n), shard: self.loop.shard)
        if self.observer != nil {
            let messages = self.isGRPC ? self.responseFramer.consume(chunk) : 0
            self.observer?.dataReceived(.response, bytes: n, messages: messages, at: self.dataReceivedTime())
        }
        switch self.machine.responseData(chunk) {
        case .forward:
            self.downstream.session.sendData(streamID: self.downstreamID, chunk)
            self.loop.markDirty(self.downstream)
        case .buffer, .discard:
            self.consumeUpstream(n)
        }
    }

    func responseDataEnded() {
        guard self.machine.responseEnd() else { return }
        var trailers: HeaderBlock?
        if self.observer != nil {
            // Only an observer may add trailers: without one, no block is made.
            var block = HeaderBlock(capacity: 0)
            self.observer?.trailersWillForward(&block, trailersOnly: false, receivedAt: self.loop.clock.responseEnd())
            if !block.isEmpty { trailers = block }
        }
        self.downstream.session.endStream(streamID: self.downstreamID, trailers: trailers)
        self.loop.markDirty(self.downstream)
    }

    /// The time a DATA chunk hands its observer: the clock's, only if the observer wants it.
    private func dataReceivedTime() -> NIODeadline {
        self.observerWantsDataTimes ? self.loop.clock.dataReceived() : self.receivedAt
    }

    /// The downstream connection wrote `bytes` of this stream's response DATA.
    func responseDataWritten(_ bytes: Int) {
        self.consumeUpstream(self.machine.responseDataWritten(bytes))
    }

    private func consumeUpstream(_ bytes: Int) {
        guard bytes > 0, let upstream = self.upstream else { return }
        guard upstream.state != .closed else {
            // The connection went away after this stream closed on it: nothing to give back.
            _ = self.machine.upstreamConnectionLost("upstream connection closed", .abandoned)
            return
        }
        upstream.session.consume(streamID: self.upstreamID, bytes: bytes)
        self.loop.markDirty(upstream)
    }

    // MARK: Closing

    /// The client side of the stream closed (cleanly or by RST_STREAM `errorCode`).
    func downstreamDidClose(errorCode: UInt32, connectionLost: Bool) {
        self.perform(self.machine.downstreamClosed(errorCode: errorCode, connectionLost: connectionLost))
    }

    /// The upstream side of the stream closed (cleanly or by RST_STREAM `errorCode`).
    func upstreamDidClose(errorCode: UInt32) {
        self.perform(
            self.machine.upstreamClosed(
                errorCode: errorCode,
                refusedCause: self.prefixed(
                    "upstream \(self.pool.host):\(self.pool.port) refused the stream (REFUSED_STREAM) on "
                        + "\(self.loop.configuration.maxRetries + 1) attempts")))
    }

    /// The upstream connection is gone before this stream's close arrived.
    func upstreamConnectionLost(_ cause: String, _ loss: UpstreamLoss) {
        let effects = self.machine.upstreamConnectionLost(self.prefixed(cause), loss)
        self.upstream = nil
        self.perform(effects)
    }

    /// The pool could not get a connection (connect error, closed before SETTINGS).
    func failUnavailable(_ cause: String) {
        self.perform(self.machine.upstreamUnavailable(self.prefixed(cause), status: 502))
    }

    /// No upstream connection had room within the wait deadline.
    func upstreamWaitTimedOut(_ cause: String) {
        self.perform(self.machine.upstreamUnavailable(self.prefixed(cause), status: 503))
    }

    private func prefixed(_ cause: String) -> String {
        self.loop.configuration.faultPrefix.map { "\($0): \(cause)" } ?? cause
    }

    /// Carries out what the state machine decided, downstream side first where order matters.
    private func perform(_ effects: StateMachine.Effects) {
        let metrics = self.loop.metrics
        switch effects.resetReceived {
        case .downstream: metrics.resetsReceivedDownstream.increment()
        case .upstream: metrics.resetsReceivedUpstream.increment()
        case nil: break
        }
        if effects.consumeDownstream > 0 {
            self.downstream.consume(streamID: self.downstreamID, bytes: effects.consumeDownstream)
        }
        self.consumeUpstream(effects.consumeUpstream)
        if let code = effects.resetUpstream, let upstream = self.upstream {
            upstream.resetStream(self.upstreamID, errorCode: code)
        }
        if let code = effects.resetDownstream {
            self.downstream.resetStream(self.downstreamID, errorCode: code)
        }
        if let fault = effects.fault {
            switch fault {
            case .requestTooLarge: break  // counted as header_list_too_large
            default: metrics.upstreamUnavailable.increment()
            }
            self.write(fault)
        }
        if effects.cancelWaiting { self.pool.cancelWaiting(self) }
        if effects.retry {
            self.upstream?.streams.removeValue(forKey: self.upstreamID)
            self.upstream = nil
            self.upstreamID = 0
            metrics.retries.increment()
            self.loop.logger.debug("retrying stream on a new upstream connection")
            self.pool.open(self)
        }
        if let reason = effects.finished {
            // Recorded before it stops counting as active: a scrape that sees no stream active
            // sees every ended stream in the request counts and histograms.
            self.observer?.streamEnded(reason, at: self.loop.clock.streamEnded())
            metrics.streamsActive.decrement()
            self.upstream = nil
        }
    }

    private func write(_ fault: StateMachine.Fault) {
        let session = self.downstream.session
        switch fault {
        case .grpcTrailersOnly(let cause):
            try? session.submitResponse(
                streamID: self.downstreamID, FaultResponse.grpcTrailersOnly(FaultResponse.grpcUnavailable(cause)),
                endStream: true)
        case .grpcTrailers(let cause):
            session.endStream(streamID: self.downstreamID, trailers: FaultResponse.grpcUnavailable(cause))
        case .requestTooLarge(let cause) where self.isGRPC:
            try? session.submitResponse(
                streamID: self.downstreamID, FaultResponse.grpcTrailersOnly(FaultResponse.grpcStatus(8, cause)),
                endStream: true)
        case .requestTooLarge(let cause):
            self.writeHTTP(FaultResponse.http(status: 431, body: cause))
        case .http(let status, let cause):
            self.writeHTTP(FaultResponse.http(status: status, body: "upstream unavailable: \(cause)"))
        }
        self.loop.markDirty(self.downstream)
    }

    private func writeHTTP(_ response: (headers: HeaderBlock, body: ByteBuffer)) {
        let session = self.downstream.session
        try? session.submitResponse(streamID: self.downstreamID, response.headers, endStream: false)
        session.sendData(streamID: self.downstreamID, response.body)
        session.endStream(streamID: self.downstreamID, trailers: nil)
    }

    /// The code a reset is passed on with. Like nghttpx, REFUSED_STREAM and NO_ERROR keep their
    /// meaning; CANCEL and ENHANCE_YOUR_CALM are kept too because gRPC maps them to CANCELLED and
    /// RESOURCE_EXHAUSTED; anything else becomes INTERNAL_ERROR.
    static func mapResetCode(_ code: UInt32) -> UInt32 {
        switch code {
        case H2ErrorCode.noError, H2ErrorCode.refusedStream, H2ErrorCode.cancel, H2ErrorCode.enhanceYourCalm: code
        default: H2ErrorCode.internalError
        }
    }
}
