import Logging
import NIOCore

/// Terminates or originates TLS on one connection: ciphertext on the socket side, plaintext
/// (HTTP/2) on the other, OpenSSL in between through memory BIOs (``TLSConnection``).
///
/// Writes made before the handshake is done (the HTTP/2 preface and SETTINGS) are buffered and
/// sent once ALPN agreed on `h2`. Plaintext writes are coalesced until `flush` (``TLSPlaintextBuffer``),
/// so a flush goes out as one TLS record per 16 KiB, not one per frame or payload slice.
final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: TLSConnection?
    private let endpoint: TLSEndpoint
    private let logger: Logger
    private var state: StateMachine
    /// Plaintext written since the last flush (or during the handshake).
    private var plaintext = TLSPlaintextBuffer()
    private var promises: [EventLoopPromise<Void>] = []
    private var flushRequested = false
    private var timeout: Scheduled<Void>?
    /// Armed by the first read or write after the last check; frees OpenSSL's record buffers
    /// when the connection stayed idle until it fired.
    private var idleCheck: Scheduled<Void>?
    private var activeSinceIdleCheck = false
    /// What the last read decrypted into, for the next read to reuse: `clear()` keeps the
    /// storage unless the connection handler still holds a slice of it. Dropped when idle.
    private var lastPlaintext: ByteBuffer?
    private var peer = "?"
    /// How many times the record buffers were freed on an idle connection (tests read it).
    private(set) var recordBufferReleases = 0

    /// Bytes: one TLS record's plaintext at most.
    static let maximumPlaintextBuffer = 16_384
    /// Bytes: the smallest plaintext buffer, for reads of a few bytes (a PING, a WINDOW_UPDATE).
    static let minimumPlaintextBuffer = 256
    /// A connection without a read or write for this long (up to twice as long) gives OpenSSL's
    /// two ~17 KiB record buffers back. A busy one keeps them: freeing them after every read and
    /// write (`SSL_MODE_RELEASE_BUFFERS`) cost 4 allocations of 17 KiB per flush.
    static let recordBufferIdleTime = TimeAmount.seconds(1)

    init(endpoint: TLSEndpoint, context: TLSContext, logger: Logger) {
        self.endpoint = endpoint
        self.connection = TLSConnection(context: context)
        self.logger = logger
        self.state = StateMachine(isClient: context.role == .client)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimers()
    }

    func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard self.state.channelActive() == .startHandshake else { return }
        self.peer = context.channel.remoteAddress.map { "\($0)" } ?? "?"
        guard self.connection != nil else {
            self.fail(
                context: context, TLSHandshakeFailure(reason: .other, detail: "cannot allocate an SSL object"))
            return
        }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.timeout = context.eventLoop.assumeIsolated().scheduleTask(in: self.endpoint.handshakeTimeout) {
            let context = loopBound.value
            if case .fail(let failure) = self.state.handshakeTimedOut() {
                self.fail(context: context, failure)
            }
        }
        if self.state.isClient { self.continueHandshake(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let connection = self.connection else { return }
        let buffer = self.unwrapInboundIn(data)
        connection.receive(buffer)
        switch self.state.state {
        case .handshaking:
            self.state.bytesReceived()
            self.continueHandshake(context: context)
        case .established:
            self.readPlaintext(context: context, hint: buffer.readableBytes)
        case .idle, .closed:
            break
        }
    }

    private func continueHandshake(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        switch connection.handshake() {
        case .wantRead:
            self.sendOutput(context: context)
        case .done:
            switch self.state.handshakeCompleted(negotiatedProtocol: connection.negotiatedProtocol) {
            case .flushBufferedWrites:
                self.timeout?.cancel()
                self.timeout = nil
                self.endpoint.metrics.handshakeCompleted(side: self.endpoint.side, resumed: connection.isResumed)
                self.logger.debug(
                    "TLS handshake done",
                    metadata: [
                        "side": "\(self.endpoint.side.rawValue)", "peer": "\(self.peer)",
                        "tls": "\(connection.summary)", "resumed": "\(connection.isResumed)",
                    ])
                if self.flushRequested || !self.plaintext.isEmpty {
                    self.encryptAndFlush(context: context)
                } else {
                    self.sendOutput(context: context)
                }
                // Records that came with the last handshake flight.
                self.readPlaintext(context: context, hint: 0)
            case .fail(let failure):
                self.fail(context: context, failure)
            }
        case .failed(let failure):
            _ = self.state.handshakeFailed(failure)
            self.fail(context: context, failure)
        case .closed:
            _ = self.state.handshakeFailed(
                TLSHandshakeFailure(reason: .truncated, detail: "close_notify during the handshake"))
            self.fail(
                context: context, TLSHandshakeFailure(reason: .truncated, detail: "close_notify during the handshake"))
        }
    }

    /// Decrypts every complete record received so far and passes the plaintext on.
    /// - Parameter hint: ciphertext bytes just received. The plaintext is no larger (records
    ///   split across reads aside), so buffers are sized to it, up to one record: a few hundred
    ///   bytes of HTTP/2 frames come from the allocator's small-size cache, not a 16 KiB block.
    private func readPlaintext(context: ChannelHandlerContext, hint: Int) {
        guard let connection = self.connection else { return }
        let size = min(Self.maximumPlaintextBuffer, max(Self.minimumPlaintextBuffer, hint))
        var buffer = self.lastPlaintext ?? ByteBuffer()
        self.lastPlaintext = nil
        if buffer.capacity >= size {
            buffer.clear()
        } else {
            buffer = context.channel.allocator.buffer(capacity: size)
        }
        loop: while true {
            if buffer.writableBytes == 0 {
                self.state.dataReceived()
                context.fireChannelRead(self.wrapInboundOut(buffer))
                buffer = context.channel.allocator.buffer(capacity: size)
            }
            switch connection.read(into: &buffer, limit: buffer.writableBytes) {
            case .done:
                continue
            case .wantRead:
                break loop
            case .closed:
                if buffer.readableBytes > 0 { context.fireChannelRead(self.wrapInboundOut(buffer)) }
                self.sendOutput(context: context)
                context.close(promise: nil)
                return
            case .failed(let failure):
                if buffer.readableBytes > 0 { context.fireChannelRead(self.wrapInboundOut(buffer)) }
                switch self.state.readFailed(failure) {
                case .failHandshake(let failure):
                    self.fail(context: context, failure)
                case .close(let failure):
                    self.logger.debug(
                        "TLS connection error",
                        metadata: [
                            "side": "\(self.endpoint.side.rawValue)", "peer": "\(self.peer)",
                            "error": "\(failure.detail)",
                        ])
                    self.sendOutput(context: context)
                    context.close(promise: nil)
                }
                return
            }
        }
        if buffer.readableBytes > 0 {
            self.state.dataReceived()
            context.fireChannelRead(self.wrapInboundOut(buffer))
        }
        self.lastPlaintext = buffer
        // Session tickets, key updates.
        self.sendOutput(context: context)
        self.noteActivity(context: context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.state.write() {
        case .drop:
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        case .buffer, .encrypt:
            self.plaintext.append(self.unwrapOutboundIn(data))
            if let promise { self.promises.append(promise) }
        }
    }

    func flush(context: ChannelHandlerContext) {
        switch self.state.write() {
        case .buffer:
            self.flushRequested = true
        case .encrypt:
            self.encryptAndFlush(context: context)
        case .drop:
            break
        }
    }

    private func encryptAndFlush(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        self.flushRequested = false
        if !self.plaintext.isEmpty {
            if case .failed(let failure) = self.plaintext.drain({ connection.write($0) }) {
                self.failPromises(ChannelError.ioOnClosedChannel)
                self.logger.debug(
                    "TLS write failed",
                    metadata: ["side": "\(self.endpoint.side.rawValue)", "error": "\(failure.detail)"])
                context.close(promise: nil)
                return
            }
        }
        let promise = self.combinedPromise(context: context)
        if let output = connection.takeOutput() {
            context.writeAndFlush(self.wrapOutboundOut(output), promise: promise)
        } else {
            promise?.succeed()
        }
        self.noteActivity(context: context)
    }

    /// Notes a read or write: arms the idle check, or tells the armed one the connection is busy.
    private func noteActivity(context: ChannelHandlerContext) {
        guard self.idleCheck == nil else {
            self.activeSinceIdleCheck = true
            return
        }
        self.scheduleIdleCheck(context: context)
    }

    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        self.activeSinceIdleCheck = false
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.idleCheck = context.eventLoop.assumeIsolated().scheduleTask(in: Self.recordBufferIdleTime) {
            self.idleCheckFired(context: loopBound.value)
        }
    }

    private func idleCheckFired(context: ChannelHandlerContext) {
        self.idleCheck = nil
        guard self.state.isEstablished, let connection = self.connection else { return }
        if self.activeSinceIdleCheck {
            self.scheduleIdleCheck(context: context)
        } else {
            self.lastPlaintext = nil
            if connection.releaseRecordBuffers() { self.recordBufferReleases += 1 }
        }
    }

    private func cancelTimers() {
        self.timeout?.cancel()
        self.timeout = nil
        self.idleCheck?.cancel()
        self.idleCheck = nil
    }

    private func combinedPromise(context: ChannelHandlerContext) -> EventLoopPromise<Void>? {
        switch self.promises.count {
        case 0:
            return nil
        case 1:
            defer { self.promises.removeAll(keepingCapacity: true) }
            return self.promises[0]
        default:
            let combined = context.eventLoop.makePromise(of: Void.self)
            for p in self.promises { combined.futureResult.cascade(to: p) }
            self.promises.removeAll(keepingCapacity: true)
            return combined
        }
    }

    private func failPromises(_ error: Error) {
        let promises = self.promises
        self.promises.removeAll()
        for p in promises { p.fail(error) }
    }

    /// Sends what OpenSSL produced (handshake messages, alerts, tickets).
    private func sendOutput(context: ChannelHandlerContext) {
        guard let output = self.connection?.takeOutput() else { return }
        context.writeAndFlush(self.wrapOutboundOut(output), promise: nil)
    }

    /// Counts and logs a failed handshake, sends the alert OpenSSL queued, and closes.
    private func fail(context: ChannelHandlerContext, _ failure: TLSHandshakeFailure) {
        self.cancelTimers()
        self.endpoint.metrics.handshakeFailed(side: self.endpoint.side, reason: failure.reason)
        let metadata: Logger.Metadata = [
            "side": "\(self.endpoint.side.rawValue)", "peer": "\(self.peer)", "reason": "\(failure.reason.rawValue)",
            "error": "\(failure.detail)",
        ]
        switch self.endpoint.side {
        case .downstream: self.logger.notice("TLS handshake with client failed", metadata: metadata)
        // Towards the upstream, each failed attempt is counted here and logged at debug: the
        // pool says "cannot connect to upstream" once per distinct cause, in plain words.
        case .upstream: self.logger.debug("TLS handshake with upstream failed", metadata: metadata)
        }
        self.plaintext.reset()
        self.failPromises(ChannelError.ioOnClosedChannel)
        if context.channel.isActive { self.sendOutput(context: context) }
        // The connection handler learns why (an upstream connection tells `/readyz`), after the
        // alert is written: the handler closes the channel.
        context.fireErrorCaught(failure)
        if context.channel.isActive { context.close(promise: nil) }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all, self.state.isEstablished, let connection = self.connection {
            if !self.plaintext.isEmpty { self.encryptAndFlush(context: context) }
            connection.shutdown()
            self.sendOutput(context: context)
        }
        context.close(mode: mode, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.cancelTimers()
        if case .fail(let failure) = self.state.channelInactive() {
            self.fail(context: context, failure)
        }
        self.plaintext.reset()
        self.lastPlaintext = nil
        self.failPromises(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }
}
