import Logging
import NIOCore

/// A client connection: an nghttp2 server session fed from the channel, whose streams are
/// bridged to the upstream pool of the same event loop.
final class DownstreamConnection: ChannelInboundHandler, H2Connection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let loop: ProxyLoop
    let session: H2Session
    let streams = StreamTable<DownstreamStream>()
    var isDirty = false
    private var context: ChannelHandlerContext?
    private var closed = false
    /// When the bytes being decoded were read from the client (``StreamClock/requestReceived()``):
    /// the received time of every request whose HEADERS they carry.
    private var readAt: NIODeadline = .uptimeNanoseconds(0)
    private var goAwaySent = false
    private var limits = Limits(now: .now())
    /// Request DATA bytes received on this connection whose window is not given back yet: held
    /// here until the upstream takes them. With ``H2Session/queuedDataBytes`` (response DATA
    /// waiting for the client) it is what ``ProxyConfiguration/connectionBufferBudget`` bounds.
    private(set) var bufferedRequestBytes = 0

    init(loop: ProxyLoop) {
        self.loop = loop
        self.session = H2Session(
            role: .server, settings: loop.configuration.downstreamSession, headerBlocks: loop.headerBlocks,
            memory: loop.memory)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// The channel's pipeline is torn down. Drops the context, which holds this handler: a
    /// channel that never became active (a refused connect) gets no `channelInactive`, and
    /// the two would keep each other, and the nghttp2 session, alive for good.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.loop.metrics.downstreamConnectionsTotal.increment()
        self.loop.metrics.downstreamConnectionsActive.increment()
        self.limits = Limits(now: .now())
        if self.loop.metrics.downstreamConnectionsActive.value > Int64(self.loop.configuration.maxConnections) {
            self.loop.metrics.limitConnections.increment()
            self.loop.noteLimit("max_connections", hit: true)
            self.closed = true
            context.close(promise: nil)
            context.fireChannelActive()
            return
        }
        self.loop.noteLimit("max_connections", hit: false)
        self.loop.downstreams[ObjectIdentifier(self)] = self
        if self.loop.isDraining { self.beginShutdown() }
        self.loop.markDirty(self)
        self.loop.flushDirty()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closed else { return }
        let buffer = self.unwrapInboundIn(data)
        // Every request whose HEADERS are in these bytes was received now, not when its turn
        // to be decoded came: a burst of calls in one read must not start their clocks late
        // (a 300 ms deadline call then looked cancelled early).
        self.readAt = self.loop.clock.requestReceived()
        do {
            try self.session.receive(buffer)
        } catch {
            self.loop.metrics.protocolErrorsDownstream.increment()
            self.loop.logger.debug("client connection error", metadata: ["error": "\(error)"])
        }
        self.processEvents()
        self.loop.markDirty(self)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.loop.flushDirty()
    }

    /// The socket filled up (the client is not reading) or drained: hold DATA back meanwhile,
    /// so that nothing is reported written and no upstream window is given back.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.followWritability(of: context.channel)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed = true
        self.loop.metrics.downstreamConnectionsActive.decrement()
        self.loop.downstreams.removeValue(forKey: ObjectIdentifier(self))
        let open = self.streams.removeAll()
        for stream in open { stream.downstreamDidClose(errorCode: H2ErrorCode.cancel, connectionLost: true) }
        self.loop.flushDirty()
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.loop.logger.debug("client connection I/O error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func flushNow() {
        guard let context = self.context, !self.closed else { return }
        let (alive, overControlCap) = self.writeSession(to: context)
        self.processEvents()
        if overControlCap {
            self.loop.logger.debug(
                "closing a client connection that does not read",
                metadata: ["queued_control_bytes": "\(self.session.controlBytesWhilePaused)"])
            self.closed = true
            self.endForNotReading(context: context)
            return
        }
        if !alive || (self.goAwaySent && self.streams.isEmpty && !self.session.wantsWrite) {
            self.closed = true
            context.close(promise: nil)
        }
    }

    /// Gives `bytes` of request window back to the client, on `streamID` and the connection.
    func consume(streamID: Int32, bytes: Int) {
        guard bytes > 0 else { return }
        self.bufferedRequestBytes -= bytes
        self.session.consume(streamID: streamID, bytes: bytes)
        self.loop.markDirty(self)
    }

    /// Whether this connection holds more unforwarded DATA than its budget: new streams are
    /// refused until it drains (existing streams go on).
    var isOverBufferBudget: Bool {
        self.bufferedRequestBytes + self.session.queuedDataBytes > self.loop.configuration.connectionBufferBudget
    }

    private func processEvents() {
        self.loop.deliveringEvents += 1
        defer { self.loop.deliveringEvents -= 1 }
        self.session.withEvents { event in
            // The block is moved out of the event first, so the stream that gets it owns it alone
            // and its edits (timing headers) happen in place (`H2Event.takeHeaderBlock`).
            if case .headers(let id, _, let kind, let endStream) = event {
                if let stream = self.streams[id] {
                    // Trailers on a request.
                    stream.requestEnd(trailers: event.takeHeaderBlock())
                } else if kind == .request, let block = event.takeHeaderBlock() {
                    self.openStream(id, consume block, endStream: endStream)
                } else {
                    self.resetStream(id, errorCode: H2ErrorCode.protocolError)
                }
                return
            }
            switch event {
            case .headers:
                break
            case .data(let id, let chunk):
                self.bufferedRequestBytes += chunk.readableBytes
                if let stream = self.streams[id] {
                    stream.requestData(chunk)
                } else {
                    self.consume(streamID: id, bytes: chunk.readableBytes)
                }
            case .endStream(let id):
                self.streams[id]?.requestEnd(trailers: nil)
            case .dataSent(let id, let bytes):
                self.streams[id]?.responseDataWritten(bytes)
            case .streamClosed(let id, let code):
                // Idleness counts from the last stream, not from the last housekeeping tick.
                if self.streams.count == 1 { self.limits.lastActive = .now() }
                if let stream = self.streams.removeValue(forKey: id) {
                    stream.downstreamDidClose(errorCode: code, connectionLost: false)
                }
            case .goAway, .requestHeadersSent:
                break
            case .remoteSettings:
                self.limits.prefaceDone = true
            case .headerListTooLarge:
                self.loop.metrics.headerListTooLarge.increment()
            case .connectionError(let message):
                self.loop.metrics.protocolErrorsDownstream.increment()
                self.loop.logger.debug("client broke the protocol", metadata: ["error": "\(message)"])
            case .protocolError(let id, let code):
                self.loop.metrics.protocolErrorsDownstream.increment()
                self.loop.logger.debug(
                    "invalid frame from client",
                    metadata: ["stream": "\(id)", "error": "\(H2Session.errorString(code))"])
            }
        }
    }

    private func openStream(_ id: Int32, _ request: consuming HeaderBlock, endStream: Bool) {
        if self.isOverBufferBudget {
            self.loop.metrics.limitConnectionBufferBudget.increment()
            self.resetStream(id, errorCode: H2ErrorCode.refusedStream)
            return
        }
        if let responder = self.loop.localResponder, responder.handles(request) {
            let stream = LocallyAnsweredStream(
                downstream: self, streamID: id, request: request, responder: responder,
                receivedAt: self.readAt)
            self.streams[id] = stream
            if endStream { stream.requestEnd(trailers: nil) }
            return
        }
        if let problem = Self.requestProblem(request) {
            self.rejectLocally(id, problem)
            return
        }
        let stream = ProxyStream(
            downstream: self, streamID: id, request: consume request, endStream: endStream,
            receivedAt: self.readAt)
        self.streams[id] = stream
        self.loop.metrics.streamsTotal.increment(shard: self.loop.shard)
        self.loop.metrics.streamsActive.increment()
        self.loop.pool.open(stream)
    }

    /// A request that must not reach the shared upstream connection, and why: metadata the
    /// upstream would parse as a connection-level problem and hold against every other client's
    /// calls on that connection (grpc-core answered every later call on it with INTERNAL after
    /// one malformed `grpc-timeout`).
    static func requestProblem(_ request: HeaderBlock) -> String? {
        guard request.isGRPC else { return nil }
        for i in 0..<request.count where request.nameEquals(at: i, "grpc-timeout") {
            if !GRPCTimeout.isValid(request.value(at: i)) {
                return "invalid grpc-timeout \"\(String(decoding: request.value(at: i).prefix(32), as: UTF8.self))\" "
                    + "(1 to 8 digits and a unit: H M S m u n)"
            }
        }
        return nil
    }

    /// Answers the stream here with `grpc-status: 13` (INTERNAL, what gRPC servers answer
    /// to malformed metadata) naming `problem`, counted as a client protocol error.
    private func rejectLocally(_ id: Int32, _ problem: String) {
        self.loop.metrics.protocolErrorsDownstream.increment()
        self.loop.logger.debug("rejected a request", metadata: ["stream": "\(id)", "error": "\(problem)"])
        let message = self.loop.configuration.faultPrefix.map { "\($0): \(problem)" } ?? problem
        try? self.session.submitResponse(
            streamID: id, FaultResponse.grpcTrailersOnly(FaultResponse.grpcStatus(13, message)), endStream: true)
        // A request body still coming is nghttp2's to end: after a complete response it sends
        // RST_STREAM(NO_ERROR) itself (RFC 9113 §8.1); resetting here would overtake the response.
        self.loop.markDirty(self)
    }

    func resetStream(_ id: Int32, errorCode: UInt32) {
        self.loop.metrics.resetsSentDownstream.increment()
        self.session.resetStream(streamID: id, errorCode: errorCode)
        self.loop.markDirty(self)
    }

    /// Graceful shutdown: GOAWAY(2^31-1) now, the real GOAWAY after a grace period; the
    /// connection closes once its streams are done.
    func beginShutdown() {
        guard !self.goAwaySent, !self.closed else { return }
        self.session.submitShutdownNotice()
        self.loop.markDirty(self)
        self.loop.eventLoop.assumeIsolated().scheduleTask(in: self.loop.configuration.goAwayGrace) {
            self.goAwaySent = true
            self.session.submitGoAway(errorCode: H2ErrorCode.noError)
            self.loop.markDirty(self)
            self.loop.flushDirty()
        }
    }

    /// Called every second by the loop's housekeeping.
    func checkLimits(now: NIODeadline) {
        guard !self.closed else { return }
        self.streams.releaseSlotsIfEmpty()
        self.session.releaseIdleStorage()
        switch self.limits.check(now: now, openStreams: self.streams.count, configuration: self.loop.configuration) {
        case .none:
            break
        case .closePrefaceTimeout:
            self.loop.metrics.limitPrefaceTimeout.increment()
            self.loop.logger.debug("closing a client connection that sent no preface in time")
            self.closed = true
            self.context?.close(promise: nil)
        case .goAwayIdle:
            self.loop.metrics.limitIdleTimeout.increment()
            self.beginShutdown()
        case .goAwayMaxAge:
            self.loop.metrics.limitMaxAge.increment()
            self.beginShutdown()
        }
    }

    func forceClose() {
        self.context?.close(promise: nil)
    }
}
