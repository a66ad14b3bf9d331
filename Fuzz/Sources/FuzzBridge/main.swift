// Fuzz target: the whole stream bridge, driven from both sides. One ProxyLoop runs on an
// EmbeddedEventLoop; client connections (DownstreamConnection) and the upstream connections
// the pool opens (UpstreamConnection, through ProxyLoop.upstreamConnector) sit on
// EmbeddedChannels whose other ends are H2Sessions of our own, as in the unit tests'
// BridgeHarness (copied here: a fuzz package cannot import a test target).
//
// The input picks the configuration, then a sequence of operations: clients connect, open
// streams, send DATA, END_STREAM, trailers, RST_STREAM, WINDOW_UPDATE, SETTINGS, GOAWAY, and
// disconnect; upstreams answer with headers, DATA, trailers, resets, GOAWAY, SETTINGS, and
// disconnect; either side stops and starts reading (its flow-control windows or its socket);
// connects succeed, fail or hang; probes (LocalCall) run on pools that get retired; the proxy
// drains; time moves. After every pump the counts must agree with what is open, and at the end,
// once everything is closed and every timer has run: no stream active, no connection, nothing
// waiting, every probe answered once, and no connection or stream object left alive.
import CFuzzDriver
import CNGHTTP2
import Foundation
import Logging
import Metrics
import NIOCore
import NIOEmbedded

@testable import H2Proxy

private let filler = ByteBuffer(repeating: 0x61, count: 300_000)
/// `FUZZ_BRIDGE_TRACE=1`: print what an input reached (to check the corpus goes deep).
private let trace = getenv("FUZZ_BRIDGE_TRACE") != nil

private struct Input {
    var bytes: UnsafeBufferPointer<UInt8>
    var pos = 0
    var isEmpty: Bool { self.pos >= self.bytes.count }
    mutating func u8() -> UInt8 {
        guard self.pos < self.bytes.count else { return 0 }
        defer { self.pos += 1 }
        return self.bytes[self.pos]
    }
    mutating func pick<T>(_ choices: [T]) -> T { choices[Int(self.u8()) % choices.count] }
    mutating func flag() -> Bool { self.u8() & 1 != 0 }
}

// MARK: The socket and the peers (BridgeHarness, trimmed)

/// The head of a proxy channel's pipeline: unwritable past the high watermark of bytes the
/// peer has not read (inline, as NIO's socket channels do); counts `read()` calls.
private final class SocketModel: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var readDemand = 0
    var unread = 0
    var automaticWritability = true
    let highWatermark = 64 << 10
    let lowWatermark = 32 << 10
    private var context: ChannelHandlerContext?
    /// Write promises complete once the peer has read the bytes (the socket took them).
    private var promises = CircularBuffer<(end: Int, promise: EventLoopPromise<Void>)>()
    private var readSoFar = 0
    private var writtenSoFar = 0

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
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

private final class Peer {
    let session: H2Session
    let channel: EmbeddedChannel
    let socket: SocketModel
    let isClient: Bool
    /// Streams the peer opened (client) or received (server), oldest first.
    var streams: [Int32] = []
    /// Streams whose DATA window the peer keeps (the application stopped reading them).
    var stalledStreams: Set<Int32> = []
    var stallsNewStreams = false
    var unconsumed: [Int32: Int] = [:]
    var readsSocket = true
    /// Answers requests at once (server role) with what the input said.
    var autoAnswer: UInt8 = 0
    private var held: [ByteBuffer] = []
    private var heldBytes = 0
    private var toProxy: [ByteBuffer] = []

    init(isClient: Bool, channel: EmbeddedChannel, socket: SocketModel, settings: H2Session.Settings) {
        self.isClient = isClient
        self.session = H2Session(role: isClient ? .client : .server, settings: settings)
        self.channel = channel
        self.socket = socket
    }

    var isClosed: Bool { !self.channel.isActive }

    func pick(_ input: inout Input) -> Int32? {
        guard !self.streams.isEmpty else { return nil }
        let b = Int(input.u8())
        // Mostly the newest streams; sometimes an old (closed) one.
        return b < 200
            ? self.streams[self.streams.count - 1 - b % min(4, self.streams.count)]
            : self.streams[b % self.streams.count]
    }

    func close() {
        guard !self.isClosed else { return }
        while self.deliverToProxy() {}
        if self.channel.isActive { self.channel.close(promise: nil) }
    }

    func step() -> Bool {
        var moved = false
        while let buffer = try! self.channel.readOutbound(as: ByteBuffer.self) {
            self.heldBytes += buffer.readableBytes
            self.held.append(buffer)
            moved = true
        }
        if self.readsSocket && !self.held.isEmpty {
            for buffer in self.held {
                _ = try? self.session.receive(buffer)
                self.deliverEvents()
            }
            self.held.removeAll()
            let read = self.heldBytes
            self.heldBytes = 0
            self.socket.peerRead(read)
        }
        _ = try? self.session.produceOutput { self.toProxy.append($0) }
        self.deliverEvents()
        if self.deliverToProxy() { moved = true }
        return moved
    }

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
        // One read cycle, as NIO's socket channels do it: up to 4 reads of 64 KiB at most.
        for _ in 0..<4 where !self.toProxy.isEmpty && self.channel.isActive {
            var read = ByteBufferAllocator().buffer(capacity: 64 << 10)
            while read.readableBytes < 64 << 10, var next = self.toProxy.first {
                if next.readableBytes > (64 << 10) - read.readableBytes {
                    var head = next.readSlice(length: (64 << 10) - read.readableBytes)!
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

    private func deliverEvents() {
        self.session.withEvents { event in
            switch event {
            case .headers(let id, _, .request, let end):
                self.streams.append(id)
                if self.stallsNewStreams { self.stalledStreams.insert(id) }
                if self.autoAnswer != 0 { Responses.answer(self, id, self.autoAnswer, requestEnded: end) }
            case .data(let id, let chunk):
                if self.stalledStreams.contains(id) {
                    self.unconsumed[id, default: 0] += chunk.readableBytes
                } else {
                    self.session.consume(streamID: id, bytes: chunk.readableBytes)
                }
            case .endStream(let id):
                // Answers that waited for the request's end (those given at once are given).
                if self.autoAnswer != 0 && self.autoAnswer < 128 && !self.isClient {
                    Responses.answer(self, id, self.autoAnswer, requestEnded: true)
                }
            default:
                break
            }
        }
    }

    /// Reads up to `bytes` of what the proxy wrote and the peer held (a slow reader).
    func readSome(_ bytes: Int) {
        _ = self.step()
        var read = 0
        while read < bytes, !self.held.isEmpty {
            var first = self.held.removeFirst()
            if first.readableBytes > bytes - read {
                let head = first.readSlice(length: bytes - read)!
                self.held.insert(first, at: 0)
                first = head
            }
            read += first.readableBytes
            _ = try? self.session.receive(first)
            self.deliverEvents()
        }
        self.heldBytes -= read
        self.socket.peerRead(read)
    }

    func release(_ id: Int32) {
        self.stalledStreams.remove(id)
        if let n = self.unconsumed.removeValue(forKey: id) { self.session.consume(streamID: id, bytes: n) }
    }

    /// SETTINGS mid-connection (INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS), straight through
    /// nghttp2: H2Session sends its SETTINGS only once, at the start.
    func submitSettings(windowSize: UInt32?, maxStreams: UInt32?) {
        var entries: [nghttp2_settings_entry] = []
        if let windowSize {
            entries.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: windowSize))
        }
        if let maxStreams {
            entries.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: maxStreams))
        }
        _ = nghttp2_submit_settings(self.session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
    }

    /// WINDOW_UPDATE of `increment` on `stream` (0: the connection), beyond what was consumed.
    func windowUpdate(stream: Int32, increment: Int32) {
        _ = nghttp2_submit_window_update(self.session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, increment)
    }

    /// GOAWAY naming `lastStreamID` (the streams above it are refused).
    func goAway(lastStreamID: Int32, code: UInt32) {
        _ = nghttp2_submit_goaway(
            self.session.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), lastStreamID, code, nil, 0)
    }
}

private enum Responses {
    static func request(_ variant: UInt8) -> HeaderBlock {
        var h = HeaderBlock([(":method", "POST"), (":scheme", "http"), (":authority", "fuzz")])
        switch variant % 10 {
        case 0:
            h.append(name: ":path", value: "/svc/Method")
            h.append(name: "content-type", value: "application/grpc")
            h.append(name: "te", value: "trailers")
        case 1:
            h.append(name: ":path", value: "/svc/Method")
            h.append(name: "content-type", value: "application/grpc+proto")
            h.append(name: "te", value: "Trailers")
            h.append(name: "grpc-timeout", value: "1S")
        case 2:
            h = HeaderBlock([(":method", "GET"), (":scheme", "http"), (":authority", "fuzz"), (":path", "/get")])
        case 3:
            // No :path: the client session refuses to send it or the proxy's rejects it.
            h.append(name: "content-type", value: "application/grpc")
        case 4:
            h.append(name: ":path", value: "/x")
            h.append(name: "connection", value: "keep-alive")
        case 5:
            h.append(name: ":path", value: "/svc/Big")
            h.append(name: "x-big", value: String(repeating: "b", count: 10_000))
        case 6:
            h.append(name: ":path", value: "/svc/Method")
            h.append(name: "content-type", value: "application/grpc")
            h.append(name: "content-length", value: "5")
        case 7:
            h.append(name: ":path", value: "/svc/Method")
            h.append(name: "te", value: "gzip")
            h.append(name: "transfer-encoding", value: "chunked")
        case 8:
            h.append(name: ":path", value: "/svc/Huge")
            h.append(name: "x-huge", value: String(repeating: "h", count: 70_000))
        default:
            h.append(name: ":path", value: "/plain")
            h.append(name: "content-type", value: "text/plain")
        }
        return h
    }

    static func response(_ variant: UInt8) -> (HeaderBlock, end: Bool) {
        switch variant % 10 {
        case 0: return (HeaderBlock([(":status", "200"), ("content-type", "application/grpc")]), false)
        case 1:
            return (
                HeaderBlock([
                    (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "\(variant % 17)"),
                    ("grpc-message", "early "),
                ]), true
            )
        case 2: return (HeaderBlock([(":status", "100")]), false)
        case 3: return (HeaderBlock([(":status", "503")]), true)
        case 4: return (HeaderBlock([(":status", "200"), ("x-big", String(repeating: "r", count: 6000))]), true)
        case 5: return (HeaderBlock([(":status", "200"), ("content-length", "3")]), false)
        case 6: return (HeaderBlock([(":status", "200"), ("Bad-Name", "x")]), false)
        case 7: return (HeaderBlock([(":status", "200"), ("connection", "close")]), false)
        case 8: return (HeaderBlock([(":status", "204")]), false)
        default: return (HeaderBlock([(":status", "200")]), false)
        }
    }

    static func trailers(_ variant: UInt8) -> HeaderBlock? {
        switch variant % 5 {
        case 0: return nil
        case 1: return HeaderBlock([("grpc-status", "0")])
        case 2: return HeaderBlock([("grpc-status", "\(variant % 17)"), ("grpc-message", "trailing space ")])
        case 3: return HeaderBlock([(":status", "200")])
        default: return HeaderBlock([("x-t", String(repeating: "t", count: 5000))])
        }
    }

    static func answer(_ peer: Peer, _ id: Int32, _ variant: UInt8, requestEnded: Bool) {
        let (headers, end) = Self.response(variant)
        // Variants 0..127 wait for the whole request; the rest answer at once.
        guard requestEnded || variant >= 128 else { return }
        if (try? peer.session.submitResponse(streamID: id, headers, endStream: end)) == nil || end { return }
        if variant & 0x10 != 0 {
            peer.session.sendData(streamID: id, filler.getSlice(at: 0, length: Int(variant) * 97)!)
        }
        if variant & 0x20 != 0 { peer.session.endStream(streamID: id, trailers: Self.trailers(variant >> 2)) }
    }
}

// MARK: The proxy under test

private final class Weak {
    weak var object: AnyObject?
    init(_ object: AnyObject) { self.object = object }
}

private final class Bridge {
    enum ConnectMode { case accept, refuse, hang }

    let eventLoop = EmbeddedEventLoop()
    let metrics = ProxyMetrics(registry: MetricsRegistry())
    let loop: ProxyLoop
    var clients: [Peer] = []
    var upstreams: [Peer] = []
    var connectMode = ConnectMode.accept
    var upstreamSettings = H2Session.Settings()
    var upstreamAutoAnswer: UInt8 = 0
    var pendingConnects: [EventLoopPromise<Void>] = []
    var callsStarted = 0
    var callsEnded = 0
    var objects: [Weak] = []
    var seenStreams: Set<ObjectIdentifier> = []

    init(configuration: ProxyConfiguration) {
        var logger = Logger(label: "fuzz-bridge")
        logger.logLevel = .critical
        self.loop = ProxyLoop(
            eventLoop: self.eventLoop, configuration: configuration, metrics: self.metrics, observerFactory: nil,
            localResponder: nil, logger: logger)
        self.loop.upstreamConnector = { [unowned self] connection, _, _ in self.connect(connection) }
    }

    func connectClient(settings: H2Session.Settings) {
        let channel = EmbeddedChannel(loop: self.eventLoop)
        let socket = SocketModel()
        let connection = DownstreamConnection(loop: self.loop)
        self.objects.append(Weak(connection))
        try! channel.pipeline.syncOperations.addHandler(socket)
        try! channel.pipeline.syncOperations.addHandler(connection)
        self.clients.append(Peer(isClient: true, channel: channel, socket: socket, settings: settings))
        channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 1), promise: nil)
    }

    private func connect(_ connection: UpstreamConnection) -> EventLoopFuture<Void> {
        self.objects.append(Weak(connection))
        switch self.connectMode {
        case .refuse:
            return self.eventLoop.makeFailedFuture(ChannelError.connectTimeout(.seconds(1)))
        case .hang:
            let promise = self.eventLoop.makePromise(of: Void.self)
            self.pendingConnects.append(promise)
            return promise.futureResult
        case .accept:
            let promise = self.eventLoop.makePromise(of: Void.self)
            self.eventLoop.assumeIsolated().execute {
                let channel = EmbeddedChannel(loop: self.eventLoop)
                let socket = SocketModel()
                try! channel.pipeline.syncOperations.addHandler(socket)
                try! channel.pipeline.syncOperations.addHandler(connection)
                let peer = Peer(isClient: false, channel: channel, socket: socket, settings: self.upstreamSettings)
                peer.autoAnswer = self.upstreamAutoAnswer
                self.upstreams.append(peer)
                channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.2", port: 1), promise: nil)
                promise.succeed(())
            }
            return promise.futureResult
        }
    }

    func failPendingConnects() {
        let pending = self.pendingConnects
        self.pendingConnects.removeAll()
        for promise in pending { promise.fail(ChannelError.connectTimeout(.seconds(1))) }
    }

    /// Until two rounds move nothing (so that tasks a round scheduled have run too).
    func pump() {
        var quietRounds = 0
        for _ in 0..<20_000 {
            self.eventLoop.run()
            var moved = false
            for peer in self.clients + self.upstreams where peer.step() { moved = true }
            self.checkCounts()
            quietRounds = moved ? 0 : quietRounds + 1
            if quietRounds == 2 { return }
        }
        preconditionFailure("the proxy and its peers never went quiet")
    }

    /// What must hold whenever the loop is idle.
    func checkCounts() {
        let window = max(Int(self.loop.configuration.downstreamSession.initialWindowSize), 65_535)
        for connection in self.loop.downstreams.values {
            for stream in connection.streams.values where self.seenStreams.insert(ObjectIdentifier(stream)).inserted {
                self.objects.append(Weak(stream))
            }
            // Request bytes held for a client are within the windows of its open streams.
            precondition(
                connection.bufferedRequestBytes >= 0
                    && connection.bufferedRequestBytes <= connection.streams.count * window,
                "\(connection.bufferedRequestBytes) request bytes held for \(connection.streams.count) streams")
            precondition(connection.session.queuedDataBytes >= 0, "negative queued DATA")
        }
        let liveClients = self.clients.filter { !$0.isClosed }.count
        let liveUpstreams = self.upstreams.filter { !$0.isClosed }.count
        precondition(self.metrics.streamsActive.value >= 0, "streams active \(self.metrics.streamsActive.value)")
        precondition(
            self.metrics.downstreamConnectionsActive.value == Int64(liveClients),
            "downstream connections \(self.metrics.downstreamConnectionsActive.value), open \(liveClients)")
        precondition(
            self.metrics.upstreamConnectionsActive.value == Int64(liveUpstreams),
            "upstream connections \(self.metrics.upstreamConnectionsActive.value), open \(liveUpstreams)")
        precondition(self.loop.downstreams.count == liveClients, "loop has \(self.loop.downstreams.count) clients")
    }

    /// Closes everything, runs every timer, and checks that nothing is left.
    func finish() {
        self.pump()
        // Twice: a probe timing out or a retry may open a connection after the first round.
        for _ in 0..<2 {
            for peer in self.clients { peer.close() }
            self.pump()
            for peer in self.upstreams { peer.close() }
            self.pump()
            self.failPendingConnects()
            self.pump()
            // Probe timeouts, wait deadlines, idle and SETTINGS timers, GOAWAY grace.
            self.eventLoop.advanceTime(by: .hours(1))
            self.pump()
        }
        let m = self.metrics
        precondition(m.streamsActive.value == 0, "streams active \(m.streamsActive.value) after closing everything")
        precondition(m.downstreamConnectionsActive.value == 0, "downstream connections left")
        precondition(m.upstreamConnectionsActive.value == 0, "upstream connections left")
        precondition(self.loop.downstreams.isEmpty, "downstream connections left in the loop")
        for pool in self.loop.allPools {
            precondition(pool.connections.isEmpty, "a pool kept \(pool.connections.count) connections")
            precondition(pool.waitingStreams == 0, "a pool kept \(pool.waitingStreams) waiting streams")
        }
        if trace {
            print(
                "streams \(m.streamsTotal.value), clients \(m.downstreamConnectionsTotal.value), upstreams "
                    + "\(m.upstreamConnectionsTotal.value), retries \(m.retries.value), unavailable "
                    + "\(m.upstreamUnavailable.value), resets sent \(m.resetsSentDownstream.value)/"
                    + "\(m.resetsSentUpstream.value) received \(m.resetsReceivedDownstream.value)/"
                    + "\(m.resetsReceivedUpstream.value), control-bytes cap \(m.limitQueuedControlBytes.value), "
                    + "budget \(m.limitConnectionBufferBudget.value), wait timeouts \(m.limitUpstreamWaitTimeout.value), "
                    + "idle closes \(m.limitUpstreamIdleTimeout.value), connect errors \(m.upstreamConnectErrors.value), "
                    + "probes \(self.callsStarted), bytes \(m.requestBytes.value)/\(m.responseBytes.value)")
        }
        precondition(
            self.callsEnded == self.callsStarted, "\(self.callsStarted - self.callsEnded) probe calls never ended")
        self.loop.stopHousekeeping()
        // Nothing may be scheduled any more; shutting down would run it.
        try! self.eventLoop.syncShutdownGracefully()
    }
}

// MARK: Operations

private func configuration(_ input: inout Input) -> ProxyConfiguration {
    var c = ProxyConfiguration(listenHost: "127.0.0.1", listenPort: 0, upstreamHost: "upstream.fuzz", upstreamPort: 1)
    let a = input.u8()
    let b = input.u8()
    c.maxUpstreamConnectionsPerLoop = 1 + Int(a % 3)
    c.maxRetries = Int((a >> 2) % 3)
    c.maxQueuedControlBytes = [16 << 10, 64 << 10, 1 << 20][Int(a >> 4) % 3]
    c.connectionBufferBudget = [64 << 10, 512 << 10, 32 << 20][Int(a >> 6) % 3]
    c.upstreamWaitTimeout = .milliseconds(Int64(500 + Int(b % 8) * 1000))
    c.upstreamIdleTimeout = .seconds(Int64(1 + (b >> 3) % 60))
    c.downstreamSession.maxConcurrentStreams = [100, 2, 10][Int(b >> 6) % 3]
    c.downstreamSession.initialWindowSize = input.pick([1 << 20, 65_535, 1000])
    c.upstreamSession.initialWindowSize = input.pick([1 << 20, 65_535, 1000])
    return c
}

private func peerSettings(_ input: inout Input) -> H2Session.Settings {
    var s = H2Session.Settings()
    let v = input.u8()
    s.initialWindowSize = [1 << 20, 0, 1000, 65_535][Int(v % 4)]
    s.maxConcurrentStreams = [100, 1, 3][Int(v >> 2) % 3]
    s.connectionWindowSize = (v >> 4) % 4 == 0 ? 65_535 : .max
    return s
}

private func body(_ input: inout Input) -> ByteBuffer {
    filler.getSlice(at: 0, length: input.pick([0, 1, 5, 100, 1000, 16_384, 70_000, 200_000]))!
}

private let codes: [UInt32] = [0, 1, 2, 3, 5, 7, 8, 0xb, 0xd]

/// Runs one input; returns weak references to every connection and stream it made, to check
/// once the loop, the channels and the peers are gone.
private func run(_ data: UnsafePointer<UInt8>, _ size: Int) -> [Weak] {
    var input = Input(bytes: UnsafeBufferPointer(start: data, count: size))
    let bridge = Bridge(configuration: configuration(&input))
    bridge.upstreamSettings = peerSettings(&input)
    bridge.upstreamAutoAnswer = input.u8()
    bridge.connectClient(settings: peerSettings(&input))
    bridge.pump()
    var steps = 0
    while !input.isEmpty && steps < 400 {
        steps += 1
        let op = input.u8()
        let clientIndex = Int(input.u8())
        let upstreamIndex = Int(input.u8())
        let client = bridge.clients.isEmpty ? nil : bridge.clients[clientIndex % bridge.clients.count]
        let upstream = bridge.upstreams.isEmpty ? nil : bridge.upstreams[upstreamIndex % bridge.upstreams.count]
        switch op % 32 {
        // Client side
        case 0:
            if bridge.clients.count < 4 { bridge.connectClient(settings: peerSettings(&input)) }
        case 1, 2:
            guard let client else { break }
            let headers = Responses.request(input.u8())
            let payload = body(&input)
            let end = input.flag()
            let hasBody = payload.readableBytes > 0
            if let id = try? client.session.submitRequest(headers, endStream: end && !hasBody) {
                client.streams.append(id)
                if hasBody { client.session.sendData(streamID: id, payload) }
                if end && hasBody { client.session.endStream(streamID: id, trailers: nil) }
            }
        case 3:
            guard let client, let id = client.pick(&input) else { break }
            client.session.sendData(streamID: id, body(&input))
        case 4:
            guard let client, let id = client.pick(&input) else { break }
            client.session.endStream(streamID: id, trailers: input.flag() ? Responses.trailers(input.u8()) : nil)
        case 5:
            guard let client, let id = client.pick(&input) else { break }
            client.session.resetStream(streamID: id, errorCode: input.pick(codes))
        case 6:
            guard let client, let id = client.pick(&input) else { break }
            if input.flag() { client.stalledStreams.insert(id) } else { client.release(id) }
        case 7:
            guard let client else { break }
            client.windowUpdate(
                stream: input.flag() ? 0 : (client.pick(&input) ?? 0), increment: Int32(input.u8()) << 8)
        case 8:
            guard let client else { break }
            client.submitSettings(
                windowSize: input.flag() ? input.pick([0, 1000, 65_535, 1 << 20]) : nil,
                maxStreams: input.flag() ? input.pick([0, 1, 100]) : nil)
        case 9:
            client?.session.submitGoAway(errorCode: input.pick(codes))
        case 10:
            client?.close()
        case 11:
            guard let client else { break }
            let mode = input.u8()
            client.readsSocket = mode & 1 == 0
            client.stallsNewStreams = mode & 2 != 0
        // Upstream side
        case 12, 13:
            guard let upstream, let id = upstream.pick(&input) else { break }
            let (headers, end) = Responses.response(input.u8())
            if input.flag() {
                try? upstream.session.submitInterimHeaders(streamID: id, headers)
            } else {
                try? upstream.session.submitResponse(streamID: id, headers, endStream: end)
            }
        case 14:
            guard let upstream, let id = upstream.pick(&input) else { break }
            upstream.session.sendData(streamID: id, body(&input))
        case 15:
            guard let upstream, let id = upstream.pick(&input) else { break }
            upstream.session.endStream(streamID: id, trailers: Responses.trailers(input.u8()))
        case 16:
            guard let upstream, let id = upstream.pick(&input) else { break }
            upstream.session.resetStream(streamID: id, errorCode: input.pick(codes))
        case 17:
            guard let upstream else { break }
            let last = input.flag() ? (upstream.streams.last ?? 0) : (upstream.pick(&input) ?? 0) - 2
            upstream.goAway(lastStreamID: max(0, last), code: input.pick(codes))
        case 18:
            upstream?.close()
        case 19:
            guard let upstream else { break }
            let mode = input.u8()
            upstream.readsSocket = mode & 1 == 0
            upstream.stallsNewStreams = mode & 2 != 0
        case 20:
            guard let upstream, let id = upstream.pick(&input) else { break }
            if input.flag() { upstream.stalledStreams.insert(id) } else { upstream.release(id) }
        case 21:
            guard let upstream else { break }
            upstream.submitSettings(
                windowSize: input.flag() ? input.pick([0, 1000, 65_535, 1 << 20]) : nil,
                maxStreams: input.flag() ? input.pick([0, 1, 100]) : nil)
        case 22:
            guard let upstream else { break }
            upstream.windowUpdate(
                stream: input.flag() ? 0 : (upstream.pick(&input) ?? 0), increment: Int32(input.u8()) << 8)
        case 23:
            bridge.upstreamAutoAnswer = input.u8()
            upstream?.autoAnswer = bridge.upstreamAutoAnswer
        // The proxy's surroundings
        case 24:
            bridge.connectMode = input.pick([.accept, .accept, .refuse, .hang])
        case 25:
            bridge.failPendingConnects()
        case 26:
            bridge.eventLoop.advanceTime(by: .milliseconds(Int64(input.pick([1, 100, 999, 5000, 30_000, 70_000]))))
        case 27:
            // A probe of this sidecar's own, on the upstream's pool or a probe target's.
            let pool = input.flag() ? bridge.loop.pool! : bridge.loop.pool(host: "probe.fuzz", port: 2)
            let call = LocalCall(
                loop: bridge.loop, pool: pool, request: Responses.request(0), body: body(&input),
                timeout: .seconds(Int64(1 + input.u8() % 5)), index: 0,
                completion: { _, _ in bridge.callsEnded += 1 })
            bridge.callsStarted += 1
            call.start()
        case 28:
            bridge.loop.retainPools(input.flag() ? [] : [ProxyLoop.poolKey(host: "probe.fuzz", port: 2)])
        case 29:
            bridge.loop.isDraining = true
            for (_, c) in bridge.loop.downstreams { c.beginShutdown() }
            bridge.loop.flushDirty()
        case 30:
            guard let peer = input.flag() ? client : upstream else { break }
            let how = input.u8()
            if how & 1 != 0 {
                peer.setWritableByHand(how & 2 != 0)
            } else {
                // A slow reader: just enough for the socket to turn writable again, or a bit.
                peer.readSome(how & 2 != 0 ? peer.socket.unread - peer.socket.lowWatermark + 1 : Int(how) * 64)
            }
        default:
            bridge.pump()
        }
        if op & 0x80 != 0 { bridge.pump() }
    }
    bridge.finish()
    return bridge.objects
}

extension Peer {
    func setWritableByHand(_ writable: Bool) {
        self.socket.automaticWritability = false
        self.socket.setWritable(writable)
    }
}

func fuzzBridge(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    for object in run(data, size) {
        if let alive = object.object {
            preconditionFailure("\(type(of: alive)) outlived the proxy loop and its channels")
        }
    }
    return 0
}

// libFuzzer's driver with this target's callback (see CFuzzDriver).
exit(runFuzzer { data, size in fuzzBridge(data, size) })

private func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, callback)
}
