internal import CNGHTTP2
import Logging
import Metrics
import NIOCore
import NIOEmbedded

@testable import H2Proxy

/// The proxy of one event loop on an `EmbeddedEventLoop`, with every connection on an
/// `EmbeddedChannel` and every remote end played by an ``H2Session`` of the test's own.
///
/// Clients are ``Peer``s with client sessions on ``DownstreamConnection``s; the upstream
/// connections the pool opens go through ``ProxyLoop/upstreamConnector`` and get a ``Peer``
/// with a server session each. ``pump()`` moves bytes both ways until nothing moves; timers
/// run with ``advanceTime(by:)``. Nothing here touches a socket or a clock.
final class BridgeHarness {
    enum ConnectMode {
        /// The connection comes up on the next loop turn, like a TCP connect.
        case accept
        /// Refused at once.
        case refuse
        /// Never completes until ``failPendingConnects()``.
        case hang
    }

    struct NotQuiet: Error {}
    struct ConnectRefused: Error {}

    let eventLoop = EmbeddedEventLoop()
    let registry = MetricsRegistry()
    let metrics: ProxyMetrics
    let configuration: ProxyConfiguration
    let loop: ProxyLoop
    private(set) var clients: [Peer] = []
    /// Upstream peers, in the order the pool connected them.
    private(set) var upstreams: [Peer] = []
    /// Settings of the server sessions that answer new upstream connections.
    var upstreamSettings = H2Session.Settings()
    /// Called for each new upstream peer before its first byte: set its behaviour here.
    var upstreamSetup: (Peer) -> Void = { _ in }

    /// The first upstream connection leaves its streams unanswered until the test says so;
    /// every later one answers unary calls (where replays and new streams go).
    func onlyLaterUpstreamsAnswer() {
        self.upstreamSetup = { [unowned self] peer in
            if self.upstreams.count > 1 { peer.onEvent = Peer.unary }
        }
    }
    var connectMode = ConnectMode.accept
    private var pendingConnects: [EventLoopPromise<Void>] = []
    /// Every connection and proxied stream made, to check none outlives its use.
    private var made: [(name: String, object: Weak)] = []
    private var seenStreams: Set<ObjectIdentifier> = []

    final class Weak {
        weak var object: AnyObject?
        init(_ object: AnyObject) { self.object = object }
    }

    /// `clock` and `observerFactory` are the loop's (a manual clock makes every stream
    /// timestamp the test's to set).
    init(
        clock: StreamClock = StreamClock(), observerFactory: StreamObserverFactory? = nil,
        _ configure: (inout ProxyConfiguration) -> Void = { _ in }
    ) {
        var configuration = ProxyConfiguration(
            listenHost: "127.0.0.1", listenPort: 0, upstreamHost: "upstream.test", upstreamPort: 50051)
        configure(&configuration)
        self.configuration = configuration
        self.metrics = ProxyMetrics(registry: self.registry)
        self.loop = ProxyLoop(
            eventLoop: self.eventLoop, configuration: configuration, metrics: self.metrics,
            observerFactory: observerFactory, localResponder: nil, logger: Logger(label: "bridge-harness"), clock: clock
        )
        self.loop.upstreamConnector = { [unowned self] connection, _, _ in self.connectUpstream(connection) }
    }

    // MARK: Connections

    /// A new client connection with its preface and SETTINGS sent.
    @discardableResult
    func connectClient(settings: H2Session.Settings = .init()) throws -> Peer {
        let channel = EmbeddedChannel(loop: self.eventLoop)
        let socket = SocketModel()
        try channel.pipeline.syncOperations.addHandler(socket)
        let connection = DownstreamConnection(loop: self.loop)
        self.made.append(("DownstreamConnection", Weak(connection)))
        try channel.pipeline.syncOperations.addHandler(connection)
        let peer = Peer(role: .client, channel: channel, socket: socket, settings: settings)
        self.clients.append(peer)
        channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 40000 + self.clients.count), promise: nil)
        try self.pump()
        return peer
    }

    private func connectUpstream(_ connection: UpstreamConnection) -> EventLoopFuture<Void> {
        self.made.append(("UpstreamConnection", Weak(connection)))
        switch self.connectMode {
        case .refuse:
            return self.eventLoop.makeFailedFuture(ConnectRefused())
        case .hang:
            let promise = self.eventLoop.makePromise(of: Void.self)
            self.pendingConnects.append(promise)
            return promise.futureResult
        case .accept:
            let promise = self.eventLoop.makePromise(of: Void.self)
            self.eventLoop.assumeIsolated().execute {
                let channel = EmbeddedChannel(loop: self.eventLoop)
                let socket = SocketModel()
                do {
                    try channel.pipeline.syncOperations.addHandler(socket)
                    try channel.pipeline.syncOperations.addHandler(connection)
                    let peer = Peer(role: .server, channel: channel, socket: socket, settings: self.upstreamSettings)
                    self.upstreams.append(peer)
                    self.upstreamSetup(peer)
                    channel.connect(to: try SocketAddress(ipAddress: "127.0.0.2", port: 50051), promise: nil)
                    promise.succeed(())
                } catch {
                    promise.fail(error)
                }
            }
            return promise.futureResult
        }
    }

    /// Fails connects left hanging by ``ConnectMode/hang`` (a connect timeout).
    func failPendingConnects() throws {
        let pending = self.pendingConnects
        self.pendingConnects.removeAll()
        for promise in pending { promise.fail(ConnectRefused()) }
        try self.pump()
    }

    // MARK: Driving

    /// Runs due tasks and moves bytes between the proxy and every peer until nothing moves.
    ///
    /// Quiet means two rounds without a byte moving, so that tasks a round scheduled (a close
    /// removing its handlers, a connect) have run too.
    func pump(maxRounds: Int = 100_000) throws {
        var quietRounds = 0
        for _ in 0..<maxRounds {
            self.eventLoop.run()
            var moved = false
            for peer in self.clients + self.upstreams where try peer.step() {
                moved = true
            }
            quietRounds = moved ? 0 : quietRounds + 1
            self.noteStreams()
            if quietRounds == 2 { return }
        }
        throw NotQuiet()
    }

    /// Pumps, moves the clock, pumps again.
    func advanceTime(by amount: TimeAmount) throws {
        try self.pump()
        self.eventLoop.advanceTime(by: amount)
        try self.pump()
    }

    /// Every client disconnects, then every upstream peer closes its connection; then an hour
    /// passes, so every timer left fires (and must find nothing to do) and nothing scheduled
    /// keeps the loop alive.
    func closeAll() throws {
        for peer in self.clients { peer.close() }
        try self.pump()
        for peer in self.upstreams { peer.close() }
        try self.pump()
        try self.failPendingConnects()
        try self.advanceTime(by: .hours(1))
    }

    private func noteStreams() {
        for connection in self.loop.downstreams.values {
            for stream in connection.streams.values where self.seenStreams.insert(ObjectIdentifier(stream)).inserted {
                self.made.append(("\(type(of: stream))", Weak(stream)))
            }
        }
    }

    // MARK: What the proxy reports

    /// Connections and streams still alive (after ``closeAll()``, none should be).
    var leftAlive: [String] { self.made.filter { $0.object.object != nil }.map(\.name) }

    var streamsActive: Int64 { self.metrics.streamsActive.value }
    var downstreamConnectionsActive: Int64 { self.metrics.downstreamConnectionsActive.value }
    var upstreamConnectionsActive: Int64 { self.metrics.upstreamConnectionsActive.value }
    var liveUpstreams: [Peer] { self.upstreams.filter { !$0.isClosed } }

    /// Whether nothing is left: no stream, no connection, nothing waiting, on either side.
    var isEmpty: Bool {
        self.streamsActive == 0 && self.downstreamConnectionsActive == 0 && self.upstreamConnectionsActive == 0
            && self.loop.downstreams.isEmpty && self.loop.allPools.allSatisfy { $0.connections.isEmpty }
            && self.loop.allPools.allSatisfy { $0.waitingStreams == 0 }
    }

    /// What ``isEmpty`` looks at, for a failure message.
    var counts: String {
        "streams \(self.streamsActive), downstream connections \(self.downstreamConnectionsActive) "
            + "(\(self.loop.downstreams.count) in the loop), upstream connections \(self.upstreamConnectionsActive) "
            + "(\(self.loop.allPools.map(\.connections.count).reduce(0, +)) in pools), waiting "
            + "\(self.loop.allPools.map(\.waitingStreams).reduce(0, +))"
    }
}

/// The socket under a proxy connection, at the head of its pipeline: turns the channel
/// unwritable as soon as a write leaves more than ``highWatermark`` bytes unread by the peer
/// (inline, as NIO's socket channels do), completes a write's promise only once the peer has
/// read its bytes (the socket took them), and counts the proxy's `read()` calls, so that a
/// handler that turns `autoRead` off is fed only when it asks.
final class SocketModel: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var readDemand = 0
    /// Bytes the proxy wrote that the peer has not read.
    private(set) var unread = 0
    /// Let writability follow ``unread``; false once a test sets it by hand.
    var automaticWritability = true
    var highWatermark = 64 << 10
    var lowWatermark = 32 << 10
    private var context: ChannelHandlerContext?
    /// Promises of writes not wholly read yet, with the bytes still unread up to and including
    /// each (counted from the oldest).
    private var promises = CircularBuffer<(end: Int, promise: EventLoopPromise<Void>)>()
    private var readSoFar = 0
    private var writtenSoFar = 0

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        while let pending = self.promises.popFirst() { pending.promise.fail(ChannelError.ioOnClosedChannel) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let n = self.unwrapOutboundIn(data).readableBytes
        self.unread += n
        self.writtenSoFar += n
        if let promise { self.promises.append((self.writtenSoFar, promise)) }
        context.write(data, promise: nil)
        if self.automaticWritability && self.unread > self.highWatermark { self.setWritable(false) }
    }

    func read(context: ChannelHandlerContext) {
        self.readDemand += 1
        context.read()
    }

    /// The peer read `bytes`.
    func peerRead(_ bytes: Int) {
        self.unread -= bytes
        self.readSoFar += bytes
        while let first = self.promises.first, first.end <= self.readSoFar {
            self.promises.removeFirst().promise.succeed(())
        }
        if self.automaticWritability && self.unread <= self.lowWatermark { self.setWritable(true) }
    }

    func setWritable(_ writable: Bool) {
        guard let channel = self.context?.channel as? EmbeddedChannel, channel.isActive,
            channel.isWritable != writable
        else { return }
        channel.isWritable = writable
        channel.pipeline.syncOperations.fireChannelWritabilityChanged()
    }
}

/// One remote end of a proxy connection: a client of the proxy or the upstream server, as an
/// ``H2Session`` wired to the proxy's `EmbeddedChannel`.
///
/// Two ways to stop reading: ``readsStream`` false for a stream keeps its DATA's window
/// (an application that stops reading: flow control fills up), and ``readsSocket`` false
/// holds every byte the proxy writes (a full socket: ``SocketModel`` turns the channel
/// unwritable past its high watermark and writable again under its low one).
final class Peer {
    let session: H2Session
    let channel: EmbeddedChannel
    let socket: SocketModel

    /// Every event of the peer's session, oldest first (see ``recordsEvents``).
    private(set) var events: [H2Event] = []
    var recordsEvents = true
    /// Request headers received (server role), by stream.
    private(set) var requests: [Int32: HeaderBlock] = [:]
    /// Reacts to each event as it is delivered (answer a request, reset a stream, ...).
    var onEvent: ((Peer, H2Event) -> Void)?
    /// Whether the application reads `stream`: its DATA's window is given back at once.
    var readsStream: (Int32) -> Bool = { _ in true }
    /// DATA bytes received and not given back, by stream.
    private(set) var unconsumed: [Int32: Int] = [:]
    private(set) var sessionErrors: [H2Error] = []

    var readsSocket = true
    /// Bytes the proxy wrote (and flushed) that the peer has not read.
    private(set) var heldBytes = 0
    private var held: [ByteBuffer] = []
    /// Bytes the peer wrote that the proxy has not read yet.
    private var toProxy: [ByteBuffer] = []
    private(set) var bytesFromProxy = 0

    init(role: H2Session.Role, channel: EmbeddedChannel, socket: SocketModel, settings: H2Session.Settings) {
        self.session = H2Session(role: role, settings: settings)
        self.channel = channel
        self.socket = socket
    }

    /// Whether the connection is closed (by either end).
    var isClosed: Bool { !self.channel.isActive }

    // MARK: Streams (client role)

    /// Opens a stream: `headers`, then `body` if any, then END_STREAM if `end`.
    @discardableResult
    func open(_ headers: HeaderBlock = BackToBack.request(), body: ByteBuffer? = nil, end: Bool = true) throws
        -> Int32
    {
        let hasBody = (body?.readableBytes ?? 0) > 0
        let id = try self.session.submitRequest(headers, endStream: end && !hasBody)
        if let body, hasBody { self.session.sendData(streamID: id, body) }
        if end && hasBody { self.session.endStream(streamID: id, trailers: nil) }
        return id
    }

    // MARK: Streams (server role)

    func respond(_ stream: Int32, _ headers: HeaderBlock = Peer.grpcResponse(), end: Bool = false) {
        do {
            try self.session.submitResponse(streamID: stream, headers, endStream: end)
        } catch {
            self.sessionErrors.append(error)
        }
    }

    /// Headers, `body`, then trailers with `grpc-status` and `grpc-message` if given.
    func respondGRPC(_ stream: Int32, body: ByteBuffer? = nil, status: Int = 0, message: String? = nil) {
        self.respond(stream)
        if let body { self.send(stream, body) }
        self.end(stream, trailers: Peer.grpcTrailers(status: status, message: message))
    }

    // MARK: Either role

    func send(_ stream: Int32, _ data: ByteBuffer) {
        self.session.sendData(streamID: stream, data)
    }

    func end(_ stream: Int32, trailers: HeaderBlock? = nil) {
        self.session.endStream(streamID: stream, trailers: trailers)
    }

    func reset(_ stream: Int32, _ code: UInt32) {
        self.session.resetStream(streamID: stream, errorCode: code)
    }

    func goAway(_ code: UInt32 = H2ErrorCode.noError) {
        self.session.submitGoAway(errorCode: code)
    }

    /// SETTINGS in the middle of the connection (``H2Session`` sends its own only once, at the
    /// start): INITIAL_WINDOW_SIZE and MAX_CONCURRENT_STREAMS, through nghttp2 directly.
    func submitSettings(initialWindowSize: UInt32? = nil, maxConcurrentStreams: UInt32? = nil) {
        var entries: [nghttp2_settings_entry] = []
        if let initialWindowSize {
            entries.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: initialWindowSize))
        }
        if let maxConcurrentStreams {
            entries.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: maxConcurrentStreams))
        }
        _ = nghttp2_submit_settings(self.session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
    }

    /// GOAWAY naming `lastStreamID`: the streams above it were not processed (and are refused).
    func goAway(lastStreamID: Int32, _ code: UInt32 = H2ErrorCode.noError) {
        _ = nghttp2_submit_goaway(self.session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), lastStreamID, code, nil, 0)
    }

    /// Gives back the window of what `stream` received and kept.
    func release(_ stream: Int32) {
        guard let n = self.unconsumed.removeValue(forKey: stream) else { return }
        self.session.consume(streamID: stream, bytes: n)
    }

    /// The peer closes its socket (the proxy reads what was sent before, then EOF).
    func close() {
        guard !self.isClosed else { return }
        while self.deliverToProxy() {}
        if self.channel.isActive { self.channel.close(promise: nil) }
    }

    /// Reads about `bytes` of what the proxy wrote and the peer held (a slow reader), then
    /// holds the rest again.
    func readSome(_ bytes: Int) throws {
        _ = try self.step()
        var read = 0
        while read < bytes, !self.held.isEmpty {
            var first = self.held.removeFirst()
            if first.readableBytes > bytes - read {
                let head = first.readSlice(length: bytes - read)!
                self.held.insert(first, at: 0)
                first = head
            }
            read += first.readableBytes
            do {
                try self.session.receive(first)
            } catch {
                self.sessionErrors.append(error)
            }
            self.deliverEvents()
        }
        self.heldBytes -= read
        self.socket.peerRead(read)
    }

    /// Sets the proxy's channel writability by hand (and stops following the unread bytes).
    func setWritable(_ writable: Bool) {
        self.socket.automaticWritability = false
        self.socket.setWritable(writable)
    }

    // MARK: Moving bytes

    /// One round: what the proxy wrote goes to the session (unless held), what the session
    /// has goes to the proxy (if it reads). Returns whether any byte moved.
    func step() throws -> Bool {
        var moved = false
        while let buffer = try self.channel.readOutbound(as: ByteBuffer.self) {
            self.heldBytes += buffer.readableBytes
            self.bytesFromProxy += buffer.readableBytes
            self.held.append(buffer)
            moved = true
        }
        if self.readsSocket && !self.held.isEmpty {
            for buffer in self.held {
                do {
                    try self.session.receive(buffer)
                } catch {
                    self.sessionErrors.append(error)
                }
                self.deliverEvents()
            }
            self.held.removeAll()
            let read = self.heldBytes
            self.heldBytes = 0
            self.socket.peerRead(read)
        }
        do {
            try self.session.produceOutput { self.toProxy.append($0) }
        } catch {
            self.sessionErrors.append(error)
        }
        self.deliverEvents()
        if self.deliverToProxy() { moved = true }
        return moved
    }

    /// One read cycle of the proxy's channel, as NIO's socket channels do it: up to
    /// ``readsPerCycle`` reads of at most ``readSize`` bytes, then `channelReadComplete`; only
    /// if the channel is open and the proxy reads. Returns whether anything was delivered.
    @discardableResult
    private func deliverToProxy() -> Bool {
        guard !self.toProxy.isEmpty else { return false }
        guard self.channel.isActive else {
            self.toProxy.removeAll()
            return false
        }
        let autoRead = !self.channel.options.contains {
            $0.option is ChannelOptions.Types.AutoReadOption && ($0.value as? Bool) == false
        }
        guard autoRead || self.socket.readDemand > 0 else { return false }
        if !autoRead { self.socket.readDemand -= 1 }
        for _ in 0..<Self.readsPerCycle where !self.toProxy.isEmpty && self.channel.isActive {
            var read = ByteBufferAllocator().buffer(capacity: Self.readSize)
            while read.readableBytes < Self.readSize, var next = self.toProxy.first {
                if next.readableBytes > Self.readSize - read.readableBytes {
                    var head = next.readSlice(length: Self.readSize - read.readableBytes)!
                    read.writeBuffer(&head)
                    self.toProxy[0] = next
                } else {
                    read.writeBuffer(&next)
                    self.toProxy.removeFirst()
                }
            }
            self.channel.pipeline.syncOperations.fireChannelRead(NIOAny(read))
        }
        if self.channel.isActive { self.channel.pipeline.syncOperations.fireChannelReadComplete() }
        return true
    }

    /// NIO's defaults for a socket channel: `maxMessagesPerRead` and the largest buffer of
    /// its adaptive receive allocator.
    static let readsPerCycle = 4
    static let readSize = 64 << 10

    private func deliverEvents() {
        self.session.withEvents { event in
            if self.recordsEvents { self.events.append(event) }
            switch event {
            case .headers(let id, let block, .request, _):
                self.requests[id] = block
            case .data(let id, let chunk):
                if self.readsStream(id) {
                    self.session.consume(streamID: id, bytes: chunk.readableBytes)
                } else {
                    self.unconsumed[id, default: 0] += chunk.readableBytes
                }
            default:
                break
            }
            self.onEvent?(self, event)
        }
    }

    // MARK: Reading the record

    /// Request (server role) or response (client role) headers and trailers on `stream`.
    func headers(_ stream: Int32) -> [(HeaderBlock, HeadersKind, Bool)] { self.events.headers(stream: stream) }
    func data(_ stream: Int32) -> ByteBuffer { self.events.data(stream: stream) }
    func closed(_ stream: Int32) -> UInt32? { self.events.closed(stream: stream) }

    /// The error codes of every GOAWAY received.
    var goAways: [UInt32] {
        self.events.compactMap {
            if case .goAway(_, let code) = $0 { return code }
            return nil
        }
    }

    /// The last header block on `stream` carrying `grpc-status` (trailers or Trailers-Only).
    func grpcStatus(_ stream: Int32) -> (status: String, message: String?)? {
        for (block, _, _) in self.headers(stream).reversed() {
            if let status = block.first("grpc-status") { return (status, block.first("grpc-message")) }
        }
        return nil
    }

    /// Streams whose request path is `path` (server role), lowest first.
    func streams(path: String) -> [Int32] {
        self.requests.filter { $0.value.first(":path") == path }.map(\.key).sorted()
    }

    // MARK: Header blocks

    static func grpcResponse(_ extra: [(String, String)] = []) -> HeaderBlock {
        HeaderBlock([(":status", "200"), ("content-type", "application/grpc")] + extra)
    }

    static func grpcTrailers(status: Int, message: String? = nil) -> HeaderBlock {
        var block = HeaderBlock([("grpc-status", "\(status)")])
        if let message { block.append(name: "grpc-message", value: message) }
        return block
    }

    /// One gRPC message: the 5-byte prefix, then `n` bytes.
    static func grpcMessage(_ n: Int, seed: UInt8 = 1) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: n + 5)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(n))
        var body = BackToBack.bytes(n, seed: seed)
        out.writeBuffer(&body)
        return out
    }
}

extension Peer {
    /// A server behaviour: answers each request once it ended, with `answer`.
    static func answering(_ answer: @escaping (Peer, Int32, HeaderBlock) -> Void) -> (Peer, H2Event) -> Void {
        { peer, event in
            switch event {
            case .headers(let id, _, .request, true), .headers(let id, _, .trailers, true), .endStream(let id):
                if let request = peer.requests[id] { answer(peer, id, request) }
            default:
                break
            }
        }
    }

    /// Answers every request with a small gRPC message and `grpc-status: 0`.
    static var unary: (Peer, H2Event) -> Void {
        answering { peer, id, _ in peer.respondGRPC(id, body: Peer.grpcMessage(16)) }
    }
}

extension BridgeHarness {
    /// The proxy's client connections, in no particular order.
    var downstreamConnections: [DownstreamConnection] { Array(self.loop.downstreams.values) }

    /// Request DATA the proxy holds for all clients, not given back to them yet.
    var bufferedRequestBytes: Int { self.downstreamConnections.map(\.bufferedRequestBytes).reduce(0, +) }
}
