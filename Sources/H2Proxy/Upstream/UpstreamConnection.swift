import Logging
import NIOCore

/// One multiplexed h2c connection to the upstream hop: an nghttp2 client session.
final class UpstreamConnection: ChannelInboundHandler, H2Connection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        /// TCP connected, waiting for the peer's SETTINGS.
        case connecting
        case ready
        /// GOAWAY received: finish streams, take no new ones.
        case draining
        case closed
    }

    /// Strong: a connection's channel can outlive the server that made it (its close may run
    /// after `ProxyServer` is gone, at shutdown), and its last events still reach the loop.
    /// The cycle through the loop's pools ends when the connection closes.
    let loop: ProxyLoop
    /// Strong: the pool drops the connection from its list when it closes, which ends the cycle.
    let pool: UpstreamPool
    let session: H2Session
    let streams = StreamTable<UpstreamStream>()
    var isDirty = false
    private(set) var state: State = .connecting
    private var context: ChannelHandlerContext?
    /// Why the proxy closed the connection itself, for the streams that were waiting for it.
    private var closeCause: String?
    /// When the current write of the session began: the "sent" moment of the request HEADERS
    /// it serialises (``StreamClock/requestSent()``).
    private var writeStartedAt: NIODeadline = .uptimeNanoseconds(0)
    /// The lowest last stream ID of the GOAWAYs the peer sent: it did not process the streams
    /// above it (RFC 9113 §6.8).
    private(set) var goAwayLastStreamID: Int32?
    /// Closes the connection if the peer's SETTINGS do not arrive within `connect_timeout`.
    private var settingsTimeout: Scheduled<Void>?
    private var settingsTimedOut = false

    init(loop: ProxyLoop, pool: UpstreamPool) {
        self.loop = loop
        self.pool = pool
        self.session = H2Session(
            role: .client, settings: loop.configuration.upstreamSession, headerBlocks: loop.headerBlocks,
            memory: loop.memory)
    }

    /// How the SETTINGS timer reaches this connection (``TimerTarget``).
    private lazy var timerTarget = TimerTarget(self)

    deinit {
        self.timerTarget.targetGone()
        self.settingsTimeout?.cancel()
    }

    /// Streams this connection can still open under the peer's MAX_CONCURRENT_STREAMS.
    var availableStreams: Int {
        guard self.state == .ready, self.session.acceptsNewStreams else { return 0 }
        return max(0, self.session.remoteMaxConcurrentStreams - self.streams.count)
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
        self.loop.metrics.upstreamConnectionsTotal.increment()
        self.loop.metrics.upstreamConnectionsActive.increment()
        // `connect_timeout` covers the HTTP/2 handshake too: an upstream that takes the TCP
        // connection but never sends SETTINGS must not hold the streams waiting for it.
        let timeout = self.loop.configuration.connectTimeout
        // Through a TimerTarget: the timer must not keep a connection (and its channel) alive
        // on its own, and a weak reference would slow every retain and release of it.
        self.settingsTimeout = self.loop.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            [timerTarget = self.timerTarget] in
            guard let self = timerTarget.current, self.state == .connecting else { return }
            self.loop.metrics.upstreamConnectErrors.increment()
            self.settingsTimedOut = true
            self.closeCause =
                "\(self.pool.peer) sent no SETTINGS within \(UpstreamFailure.describe(timeout))"
            self.loop.logger.warning("upstream sent no SETTINGS in time", metadata: ["error": "\(self.closeCause!)"])
            self.context?.close(promise: nil)
        }
        self.loop.markDirty(self)
        self.loop.flushDirty()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Every frame in these bytes arrived when they were read: one clock reading for all.
        self.loop.clock.withSharedReading {
            do {
                try self.session.receive(self.unwrapInboundIn(data))
            } catch {
                self.loop.metrics.protocolErrorsUpstream.increment()
                self.noteProtocolViolation("\(error)")
                self.loop.logger.warning(
                    "upstream connection error", metadata: ["error": "\(self.closeCause ?? "\(error)")"])
            }
            self.processEvents()
        }
        self.pool.settingsAcknowledged(on: self)
        self.loop.markDirty(self)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.loop.flushDirty()
    }

    /// The upstream stopped reading (or started again): hold request DATA back meanwhile, so
    /// clients get no window back and each stream waits on its own flow control.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.followWritability(of: context.channel)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.settingsTimeout?.cancel()
        self.settingsTimeout = nil
        let wasConnecting = self.state == .connecting
        let closedByProxy = self.state == .closed
        // TCP connected but no HTTP/2 connection came of it (TLS failed, the peer closed before
        // its SETTINGS): a failed connect like a refused one. The SETTINGS timeout counted its own.
        if wasConnecting && !self.settingsTimedOut { self.loop.metrics.upstreamConnectErrors.increment() }
        self.state = .closed
        self.loop.metrics.upstreamConnectionsActive.decrement()
        self.pool.connectionClosed(self, beforeReady: wasConnecting, cause: self.closeCause)
        // A write that failed closes the channel from inside `flushNow`, before it delivers the
        // events of what it wrote: requests nghttp2 refused to send, HEADERS it serialised.
        // They decide which streams the upstream can have seen.
        if self.session.canDeliverEvents && self.loop.deliveringEvents == 0 { self.processEvents() }
        let open = self.streams.entries
        self.streams.removeAll()
        if !open.isEmpty {
            let cause = self.closeCause ?? "lost the connection to \(self.pool.peer)"
            if !closedByProxy && !self.loop.isDraining {
                self.loop.logger.warning(
                    self.pool.isUpstream
                        ? "upstream connection lost with streams in flight"
                        : "probe target connection lost with streams in flight",
                    metadata: ["upstream": "\(self.upstreamAddress)", "streams": "\(open.count)", "error": "\(cause)"])
            }
            for (id, stream) in open { stream.upstreamConnectionLost(cause, self.loss(ofStream: id)) }
        }
        self.loop.flushDirty()
        self.context = nil
    }

    /// What the loss of this connection says about stream `id`: above a GOAWAY's last stream
    /// ID the peer did not process it; below, it may have, unless the request never left.
    func loss(ofStream id: Int32) -> UpstreamLoss {
        if let last = self.goAwayLastStreamID, id > last { return .aboveGoAway }
        return .connectionLost
    }

    /// The peer broke HTTP/2 (nghttp2's `detail`): the cause its streams get, unless one is
    /// known already. Before its SETTINGS that means it does not speak HTTP/2 at all.
    private func noteProtocolViolation(_ detail: String) {
        guard self.closeCause == nil else { return }
        self.closeCause =
            self.state == .connecting
            ? "\(self.pool.peer) unreachable: it does not speak HTTP/2 (no SETTINGS frame first)"
            : "\(self.pool.peer) broke the HTTP/2 protocol: \(detail.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " "))"
    }

    /// `host:port` of the hop this connection goes to, for messages.
    var upstreamAddress: String { "\(self.pool.host):\(self.pool.port)" }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // The first error is the cause the streams and the log get (a TLS handshake failure,
        // a reset); later ones are consequences of it.
        if self.closeCause == nil {
            let what = UpstreamFailure.describe(error)
            self.closeCause =
                self.state == .connecting
                ? "\(self.pool.peer) unreachable: \(what)"
                : "lost the connection to \(self.pool.peer): \(what)"
        }
        self.loop.logger.debug("upstream connection I/O error", metadata: ["error": "\(self.closeCause ?? "")"])
        context.close(promise: nil)
    }

    func flushNow() {
        guard let context = self.context, self.state != .closed else { return }
        // "Sent" for every request HEADERS this write serialises: read before the bytes reach
        // the socket, so a peer on another thread never reads them "before" they were sent.
        self.writeStartedAt = self.loop.clock.requestSent()
        let (alive, overControlCap) = self.writeSession(to: context)
        self.processEvents()
        if overControlCap {
            // HEADERS and control frames pile up for an upstream that does not read: give up on
            // the connection (its streams get UNAVAILABLE) rather than grow without bound.
            self.loop.logger.warning("closing an upstream connection that does not read")
            self.state = .closed
            self.endForNotReading(context: context)
            return
        }
        if !alive || (self.state == .draining && self.streams.isEmpty) {
            context.close(promise: nil)
        }
    }

    private func processEvents() {
        self.loop.deliveringEvents += 1
        defer { self.loop.deliveringEvents -= 1 }
        self.session.withEvents { event in
            // The block is moved out of the event, so the stream owns it alone and edits it in
            // place (`H2Event.takeHeaderBlock`); one no stream takes stays for reuse.
            if case .headers(let id, _, let kind, let endStream) = event {
                if let stream = self.streams[id], let block = event.takeHeaderBlock() {
                    stream.responseHeaders(consume block, kind: kind, endStream: endStream)
                }
                return
            }
            switch event {
            case .headers:
                break
            case .data(let id, let chunk):
                if let stream = self.streams[id] {
                    stream.responseData(chunk)
                } else {
                    self.session.consume(streamID: id, bytes: chunk.readableBytes)
                }
            case .endStream(let id):
                self.streams[id]?.responseDataEnded()
            case .dataSent(let id, let bytes):
                self.streams[id]?.requestDataWritten(bytes)
            case .requestHeadersSent(let id):
                self.streams[id]?.requestHeadersWritten(at: self.writeStartedAt)
            case .streamClosed(let id, let code):
                if let stream = self.streams[id] {
                    stream.upstreamDidClose(errorCode: code)
                }
                self.streams.removeValue(forKey: id)
                self.pool.capacityChanged(self)
            case .goAway(let last, let code):
                self.loop.logger.debug(
                    "upstream GOAWAY", metadata: ["last_stream_id": "\(last)", "error_code": "\(code)"])
                if self.state != .closed { self.state = .draining }
                self.goAwayLastStreamID = min(last, self.goAwayLastStreamID ?? last)
                self.pool.capacityChanged(self)
            case .remoteSettings:
                if self.state == .connecting {
                    self.state = .ready
                    self.settingsTimeout?.cancel()
                    self.settingsTimeout = nil
                    self.pool.connectionReady(self)
                }
                self.pool.capacityChanged(self)
            case .headerListTooLarge(let id):
                self.loop.metrics.headerListTooLarge.increment()
                self.loop.logger.debug("upstream header list too large", metadata: ["stream": "\(id)"])
            case .protocolError:
                self.loop.metrics.protocolErrorsUpstream.increment()
            case .connectionError(let message):
                self.loop.metrics.protocolErrorsUpstream.increment()
                self.noteProtocolViolation(message)
                self.loop.logger.warning(
                    "upstream broke the protocol; closing the connection (its streams get UNAVAILABLE)",
                    metadata: ["error": "\(message)", "upstream": "\(self.pool.host):\(self.pool.port)"])
            }
        }
    }

    func resetStream(_ id: Int32, errorCode: UInt32) {
        self.loop.metrics.resetsSentUpstream.increment()
        self.session.resetStream(streamID: id, errorCode: errorCode)
        self.loop.markDirty(self)
    }

    func close() {
        self.context?.close(promise: nil)
    }

    /// Shutdown: the streams on this connection end with `cause` now (their clients get
    /// UNAVAILABLE), and the connection closes without a warning of its own.
    func abandon(_ cause: String) {
        guard self.state != .closed else { return }
        self.state = .closed
        self.closeCause = cause
        let open = self.streams.removeAll()
        for stream in open { stream.upstreamConnectionLost(cause, .abandoned) }
        self.context?.close(promise: nil)
    }
}
