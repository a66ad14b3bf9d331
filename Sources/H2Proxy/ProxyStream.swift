import NIOCore

/// One client stream bridged to one upstream stream.
///
/// Holds what is needed to forward in both directions and to keep flow control honest:
/// bytes received on one side are consumed (the window re-opened) only once the other
/// side has written them, or when they can never be written.
final class ProxyStream: DownstreamStream, UpstreamStream {
    unowned let downstream: DownstreamConnection
    let downstreamID: Int32
    private(set) var upstream: UpstreamConnection?
    private(set) var upstreamID: Int32 = 0
    let isGRPC: Bool
    let observer: StreamObserver?
    let receivedAt: NIODeadline

    /// The request as forwarded; kept until the first request byte is written, for retries.
    private var request: HeaderBlock?
    private var pendingRequestData = CircularBuffer<ByteBuffer>(initialCapacity: 2)
    private var requestEnded = false
    private var requestTrailers: HeaderBlock?
    /// Request DATA already written upstream, kept (up to ``retainedForRetryLimit``) until the
    /// response starts, so that a refused stream can be replayed in full on another connection.
    private var writtenRequestData: [ByteBuffer] = []
    private var writtenRequestBytes = 0
    /// Bytes of a replay that were already consumed on the client side once.
    private var replayCredit = 0
    static let retainedForRetryLimit = 64 << 10
    private var retries = 0

    private(set) var responseStarted = false
    private(set) var responseEnded = false
    private(set) var downstreamClosed = false
    private(set) var upstreamClosed = false
    /// Whether the proxy itself reset the stream on that side (so a close with an error code
    /// there is not a reset received from the peer).
    private var resetDownstreamByProxy = false
    private var resetUpstreamByProxy = false
    private var ended = false

    /// Received from downstream, not yet written upstream.
    private var unforwardedRequestBytes = 0
    /// Received from upstream, not yet written downstream.
    private var unforwardedResponseBytes = 0
    private var requestFramer = GRPCMessageFramer()
    private var responseFramer = GRPCMessageFramer()

    var loop: ProxyLoop { self.downstream.loop }
    var pool: UpstreamPool { self.downstream.loop.pool }

    init(
        downstream: DownstreamConnection, streamID: Int32, request: HeaderBlock, endStream: Bool,
        receivedAt: NIODeadline
    ) {
        self.downstream = downstream
        self.downstreamID = streamID
        self.receivedAt = receivedAt
        var isGRPC = false
        if let i = request.firstIndex(of: "content-type") { isGRPC = request.valueHasPrefix(at: i, "application/grpc") }
        self.isGRPC = isGRPC
        self.observer = downstream.loop.observerSource?.makeObserver(for: request)
        var forwarded = request
        HopByHopHeaders.strip(&forwarded)
        if let observer = self.observer {
            observer.requestHeadersWillForward(&forwarded, receivedAt: receivedAt, now: .now())
        }
        self.request = forwarded
        self.requestEnded = endStream
    }

    // MARK: Attaching to an upstream connection

    /// Opens the upstream stream on `connection` and replays what arrived meanwhile.
    func attach(to connection: UpstreamConnection) {
        guard let request = self.request, !self.downstreamClosed else { return }
        let endStream = self.requestEnded && self.pendingRequestData.isEmpty && self.requestTrailers == nil
        do {
            self.upstreamID = try connection.session.submitRequest(request, endStream: endStream)
        } catch {
            self.failUnavailable("upstream rejected stream: \(error)")
            return
        }
        self.upstream = connection
        self.upstreamClosed = false
        connection.streams[self.upstreamID] = self
        self.observer?.requestHeadersSent(at: .now())
        for chunk in self.pendingRequestData {
            connection.session.sendData(streamID: self.upstreamID, chunk)
        }
        if self.requestEnded && !endStream {
            connection.session.endStream(streamID: self.upstreamID, trailers: self.requestTrailers)
        }
        self.loop.markDirty(connection)
    }

    // MARK: Request direction (downstream → upstream)

    func requestData(_ chunk: ByteBuffer) {
        let n = chunk.readableBytes
        self.loop.metrics.requestBytes.increment(by: UInt64(n))
        if let observer = self.observer {
            let messages = self.isGRPC ? self.requestFramer.consume(chunk) : 0
            observer.dataReceived(.request, bytes: n, messages: messages, at: .now())
        }
        if self.upstreamClosed && self.upstream != nil || self.ended {
            // Nowhere to go: re-open the client's window at once.
            self.downstream.session.consume(streamID: self.downstreamID, bytes: n)
            self.loop.markDirty(self.downstream)
            return
        }
        self.unforwardedRequestBytes += n
        self.pendingRequestData.append(chunk)
        if let upstream = self.upstream {
            upstream.session.sendData(streamID: self.upstreamID, chunk)
            self.loop.markDirty(upstream)
        }
    }

    func requestEnd(trailers: HeaderBlock?) {
        guard !self.requestEnded else { return }
        self.requestEnded = true
        var trailers = trailers
        if var t = trailers {
            HopByHopHeaders.strip(&t)
            trailers = t
        }
        self.requestTrailers = trailers
        if let upstream = self.upstream, !self.upstreamClosed {
            upstream.session.endStream(streamID: self.upstreamID, trailers: trailers)
            self.loop.markDirty(upstream)
        }
    }

    /// The upstream connection wrote `bytes` of this stream's request DATA.
    func requestDataWritten(_ bytes: Int) {
        let keep = self.request != nil && self.writtenRequestBytes + bytes <= Self.retainedForRetryLimit
        var remaining = bytes
        while remaining > 0, var first = self.pendingRequestData.popFirst() {
            if first.readableBytes > remaining {
                if keep {
                    self.writtenRequestData.append(first.readSlice(length: remaining)!)
                } else {
                    first.moveReaderIndex(forwardBy: remaining)
                }
                self.pendingRequestData.prepend(first)
                remaining = 0
            } else {
                remaining -= first.readableBytes
                if keep { self.writtenRequestData.append(first) }
            }
        }
        if keep {
            self.writtenRequestBytes += bytes
        } else {
            self.stopRetaining()
        }
        // Replayed bytes were consumed on the client side the first time they went out.
        let replayed = min(bytes, self.replayCredit)
        self.replayCredit -= replayed
        let fresh = bytes - replayed
        self.unforwardedRequestBytes -= fresh
        if fresh > 0 {
            self.downstream.session.consume(streamID: self.downstreamID, bytes: fresh)
            self.loop.markDirty(self.downstream)
        }
    }

    /// The stream can no longer be retried: drop what was kept for a replay.
    private func stopRetaining() {
        self.request = nil
        self.writtenRequestData.removeAll()
        self.writtenRequestBytes = 0
    }

    // MARK: Response direction (upstream → downstream)

    func responseHeaders(_ headers: HeaderBlock, kind: HeadersKind, endStream: Bool) {
        guard !self.downstreamClosed else { return }
        var headers = headers
        HopByHopHeaders.strip(&headers)
        let now = NIODeadline.now()
        let session = self.downstream.session
        switch kind {
        case .informational:
            try? session.submitInterimHeaders(streamID: self.downstreamID, headers)
        case .response where !self.responseStarted:
            self.responseStarted = true
            self.stopRetaining()
            if endStream {
                self.responseEnded = true
                self.observer?.trailersWillForward(&headers, trailersOnly: true, receivedAt: now)
            } else {
                self.observer?.responseHeadersWillForward(&headers, at: now)
            }
            do {
                try session.submitResponse(streamID: self.downstreamID, headers, endStream: endStream)
            } catch {
                self.resetDownstream(errorCode: H2ErrorCode.internalError)
            }
        case .trailers, .response:
            self.responseEnd(trailers: headers, at: now)
        case .request:
            self.resetDownstream(errorCode: H2ErrorCode.protocolError)
        }
        self.loop.markDirty(self.downstream)
    }

    func responseData(_ chunk: ByteBuffer) {
        let n = chunk.readableBytes
        self.loop.metrics.responseBytes.increment(by: UInt64(n))
        if let observer = self.observer {
            let messages = self.isGRPC ? self.responseFramer.consume(chunk) : 0
            observer.dataReceived(.response, bytes: n, messages: messages, at: .now())
        }
        if self.downstreamClosed {
            self.upstream?.session.consume(streamID: self.upstreamID, bytes: n)
            if let upstream = self.upstream { self.loop.markDirty(upstream) }
            return
        }
        self.unforwardedResponseBytes += n
        self.downstream.session.sendData(streamID: self.downstreamID, chunk)
        self.loop.markDirty(self.downstream)
    }

    func responseEnd(trailers: HeaderBlock?, at now: NIODeadline) {
        guard !self.responseEnded, !self.downstreamClosed else { return }
        self.responseEnded = true
        var block = trailers ?? HeaderBlock(capacity: 0)
        if trailers != nil { HopByHopHeaders.strip(&block) }
        self.observer?.trailersWillForward(&block, trailersOnly: false, receivedAt: now)
        self.downstream.session.endStream(streamID: self.downstreamID, trailers: block.isEmpty ? nil : block)
        self.loop.markDirty(self.downstream)
    }

    /// The downstream connection wrote `bytes` of this stream's response DATA.
    func responseDataWritten(_ bytes: Int) {
        self.unforwardedResponseBytes -= bytes
        guard let upstream = self.upstream else { return }
        upstream.session.consume(streamID: self.upstreamID, bytes: bytes)
        self.loop.markDirty(upstream)
    }

    // MARK: Closing

    /// The client side of the stream closed (cleanly or by RST_STREAM `errorCode`).
    func downstreamDidClose(errorCode: UInt32, connectionLost: Bool) {
        guard !self.downstreamClosed else { return }
        self.downstreamClosed = true
        if errorCode != 0 && !connectionLost && !self.resetDownstreamByProxy {
            self.loop.metrics.resetsReceivedDownstream.increment()
        }
        // Response bytes that will never be written downstream: give the upstream window back.
        if self.unforwardedResponseBytes > 0, let upstream = self.upstream {
            upstream.session.consume(streamID: self.upstreamID, bytes: self.unforwardedResponseBytes)
            self.loop.markDirty(upstream)
        }
        self.unforwardedResponseBytes = 0
        if let upstream = self.upstream, !self.upstreamClosed {
            if !self.responseEnded || errorCode != 0 {
                self.resetUpstream(
                    upstream, errorCode: errorCode == 0 ? H2ErrorCode.cancel : Self.mapResetCode(errorCode))
            }
        } else if self.upstream == nil {
            self.pool.cancelWaiting(self)
            self.releasePendingRequestData()
        }
        self.finishIfDone(
            errorCode == 0
                ? (self.responseEnded ? .completed : .downstreamReset(errorCode)) : .downstreamReset(errorCode))
    }

    /// The upstream side of the stream closed (cleanly or by RST_STREAM `errorCode`).
    func upstreamDidClose(errorCode: UInt32) {
        guard !self.upstreamClosed, let upstream = self.upstream else { return }
        self.upstreamClosed = true
        upstream.streams.removeValue(forKey: self.upstreamID)
        if errorCode == H2ErrorCode.refusedStream, self.retryIfPossible(cause: "upstream refused stream") {
            return
        }
        if errorCode != 0 && !self.resetUpstreamByProxy { self.loop.metrics.resetsReceivedUpstream.increment() }
        self.releasePendingRequestData()
        if !self.downstreamClosed && !self.responseEnded {
            if errorCode == 0 {
                // Closed without ending the response: treat as a reset.
                self.resetDownstream(errorCode: H2ErrorCode.internalError)
            } else if !self.responseStarted && errorCode == H2ErrorCode.refusedStream {
                self.failUnavailable("upstream refused stream")
                return
            } else {
                self.resetDownstream(errorCode: Self.mapResetCode(errorCode))
            }
        }
        self.finishIfDone(errorCode == 0 ? .completed : .upstreamReset(errorCode))
    }

    /// The upstream connection is gone before this stream finished.
    func upstreamConnectionLost(_ cause: String) {
        guard !self.upstreamClosed else { return }
        if let upstream = self.upstream { upstream.streams.removeValue(forKey: self.upstreamID) }
        self.upstreamClosed = true
        self.releasePendingRequestData()
        if self.downstreamClosed || self.responseEnded {
            self.finishIfDone(.completed)
            return
        }
        self.failUnavailable(cause)
    }

    private func resetDownstream(errorCode: UInt32) {
        self.resetDownstreamByProxy = true
        self.downstream.resetStream(self.downstreamID, errorCode: errorCode)
    }

    private func resetUpstream(_ upstream: UpstreamConnection, errorCode: UInt32) {
        self.resetUpstreamByProxy = true
        upstream.resetStream(self.upstreamID, errorCode: errorCode)
    }

    /// Answers the client on the proxy's own behalf: UNAVAILABLE for gRPC, 502 otherwise.
    func failUnavailable(_ cause: String) {
        let cause = self.loop.configuration.faultPrefix.map { "\($0): \(cause)" } ?? cause
        self.loop.metrics.upstreamUnavailable.increment()
        self.releasePendingRequestData()
        self.upstreamClosed = true
        guard !self.downstreamClosed, !self.responseEnded else {
            self.finishIfDone(.upstreamUnavailable(cause))
            return
        }
        self.responseEnded = true
        let session = self.downstream.session
        if self.isGRPC {
            let status = FaultResponse.grpcUnavailable(cause)
            if self.responseStarted {
                session.endStream(streamID: self.downstreamID, trailers: status)
            } else {
                self.responseStarted = true
                try? session.submitResponse(
                    streamID: self.downstreamID, FaultResponse.grpcTrailersOnly(status), endStream: true)
            }
        } else if !self.responseStarted {
            self.responseStarted = true
            let (headers, body) = FaultResponse.badGateway(cause)
            try? session.submitResponse(streamID: self.downstreamID, headers, endStream: false)
            session.sendData(streamID: self.downstreamID, body)
            session.endStream(streamID: self.downstreamID, trailers: nil)
        } else {
            self.resetDownstream(errorCode: H2ErrorCode.internalError)
        }
        self.loop.markDirty(self.downstream)
        self.finishIfDone(.upstreamUnavailable(cause))
    }

    private func retryIfPossible(cause: String) -> Bool {
        guard self.request != nil, !self.responseStarted, !self.downstreamClosed,
            self.retries < self.loop.configuration.maxRetries
        else { return false }
        self.retries += 1
        // Replay what was written, ahead of what was not.
        for chunk in self.writtenRequestData.reversed() { self.pendingRequestData.prepend(chunk) }
        self.replayCredit += self.writtenRequestBytes
        self.writtenRequestData.removeAll()
        self.writtenRequestBytes = 0
        self.loop.metrics.retries.increment()
        self.upstream = nil
        self.upstreamID = 0
        self.upstreamClosed = false
        self.loop.logger.debug("retrying stream on a new upstream connection", metadata: ["cause": "\(cause)"])
        self.pool.open(self)
        return true
    }

    /// Request bytes that will never be written upstream: give the client's window back.
    private func releasePendingRequestData() {
        if self.unforwardedRequestBytes > 0 {
            self.downstream.session.consume(streamID: self.downstreamID, bytes: self.unforwardedRequestBytes)
            self.loop.markDirty(self.downstream)
        }
        self.unforwardedRequestBytes = 0
        self.replayCredit = 0
        self.pendingRequestData.removeAll()
        self.writtenRequestData.removeAll()
        self.writtenRequestBytes = 0
    }

    private var endReason: StreamEndReason?

    private func finishIfDone(_ reason: StreamEndReason) {
        if self.endReason == nil || self.endReason == .completed { self.endReason = reason }
        let upstreamDone = self.upstream == nil || self.upstreamClosed
        guard self.downstreamClosed, upstreamDone, !self.ended else { return }
        self.ended = true
        self.loop.metrics.streamsActive.decrement()
        self.observer?.streamEnded(self.endReason ?? reason, at: .now())
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
