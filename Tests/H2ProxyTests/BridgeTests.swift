import NIOCore
import Testing

@testable import H2Proxy

#if canImport(Glibc)
    import Glibc
#endif

/// The stream bridge through real ``DownstreamConnection``s and ``UpstreamConnection``s on
/// `EmbeddedChannel`s (``BridgeHarness``), against peers that misbehave: the four inputs of
/// issue 11 and the interop details around them. Each test runs in milliseconds and ends with
/// every count back to zero.
@Suite struct BridgeTests {
    /// Ends a test: every client disconnects, every upstream closes, and nothing may be left.
    private func expectEmptyAfterClosing(
        _ h: BridgeHarness, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        try h.closeAll()
        #expect(h.isEmpty, "left over: \(h.counts)", sourceLocation: sourceLocation)
        #expect(h.leftAlive.isEmpty, "still alive: \(h.leftAlive)", sourceLocation: sourceLocation)
    }

    private func expectNoPeerErrors(_ h: BridgeHarness, sourceLocation: SourceLocation = #_sourceLocation) {
        for peer in h.clients + h.upstreams {
            #expect(peer.sessionErrors.isEmpty, "\(peer.sessionErrors)", sourceLocation: sourceLocation)
        }
    }

    private static func get(_ path: String) -> HeaderBlock {
        HeaderBlock([(":method", "GET"), (":scheme", "http"), (":authority", "test"), (":path", path)])
    }

    /// `n` bytes, quickly (large bodies whose content does not matter).
    private static func filler(_ n: Int) -> ByteBuffer { ByteBuffer(repeating: 0x61, count: n) }

    @Test func unaryRoundTrip() throws {
        let h = BridgeHarness()
        h.upstreamSetup = { $0.onEvent = Peer.unary }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(10))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        #expect(client.data(id) == Peer.grpcMessage(16))
        #expect(client.closed(id) == 0)
        #expect(h.upstreams.count == 1)
        #expect(h.upstreams.first?.data(1) == Peer.grpcMessage(10))
        #expect(h.streamsActive == 0)
        #expect(h.bufferedRequestBytes == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    // MARK: The four inputs of issue 11

    /// Input 1: the upstream answers at once (Trailers-Only, `grpc-status: 3`) with a 1,000-byte
    /// window it never reads nor resets; the client uploads 50 KB, reads the answer, disconnects;
    /// later the upstream closes. The stream must end, and nothing may outlive its connection.
    @Test func earlyResponderThatNeverReadsEndsTheStreamAndSurvivesTheUpstreamClosing() throws {
        let h = BridgeHarness()
        h.upstreamSettings.initialWindowSize = 1000
        h.upstreamSetup = { peer in
            peer.readsStream = { _ in false }
            peer.onEvent = { peer, event in
                guard case .headers(let id, _, .request, _) = event else { return }
                peer.respond(id, Peer.grpcResponse([("grpc-status", "3"), ("grpc-message", "no")]), end: true)
            }
        }
        let client = try h.connectClient()
        let id = try client.open(body: Self.filler(50_000))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "3")
        #expect(client.closed(id) == 0)
        let upstream = try #require(h.upstreams.first)
        #expect(upstream.data(1).readableBytes <= 1000)
        // The upload can never finish: the proxy resets the upstream stream and gives every
        // buffered byte's window back.
        #expect(upstream.closed(1) == H2ErrorCode.cancel)
        #expect(h.streamsActive == 0)
        #expect(h.bufferedRequestBytes == 0)

        client.close()
        try h.pump()
        #expect(h.downstreamConnectionsActive == 0)
        #expect(h.streamsActive == 0)
        try h.advanceTime(by: .seconds(3))
        upstream.close()
        try h.pump()
        #expect(h.upstreamConnectionsActive == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    enum SlowReader: CaseIterable, Sendable {
        /// SETTINGS_INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE.
        case zeroWindow
        /// A default window, but the socket is never read (the channel turns unwritable).
        case fullSocket
    }

    /// Input 2: one client opens 10 server-streaming calls and never reads while the upstream
    /// sends megabytes on each; another client's unary calls through the same loop and the same
    /// upstream connection must still complete.
    @Test(arguments: SlowReader.allCases)
    func aClientThatStopsReadingDoesNotStarveOtherClients(_ slowness: SlowReader) throws {
        let h = BridgeHarness()
        let streamBody = Self.filler(4 << 20)
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, request in
                if request.first(":path") == "/svc/Stream" {
                    peer.respond(id)
                    peer.send(id, streamBody)
                    peer.end(id, trailers: Peer.grpcTrailers(status: 0))
                } else {
                    peer.respondGRPC(id, body: Peer.grpcMessage(16))
                }
            }
        }
        var settings = H2Session.Settings()
        if slowness == .zeroWindow { settings.initialWindowSize = 0 }
        let slow = try h.connectClient(settings: settings)
        slow.readsStream = { _ in false }
        if slowness == .fullSocket { slow.readsSocket = false }
        let streams = try (0..<10).map { _ in try slow.open(BackToBack.request(path: "/svc/Stream")) }
        try h.pump()
        #expect(h.streamsActive == 10)

        let other = try h.connectClient()
        let unary = try (0..<5).map { _ in try other.open(body: Peer.grpcMessage(8)) }
        try h.pump()
        for id in unary {
            #expect(other.grpcStatus(id)?.status == "0", "unary stream \(id)")
            #expect(other.closed(id) == 0)
        }
        #expect(h.upstreams.count == 1, "the test means one shared upstream connection")
        #expect(h.streamsActive == 10)
        // What the proxy holds for the slow client (queued in its session, or written to a
        // socket that is not read) is bounded by the stream windows it gives the upstream, not
        // by what the upstream has to send.
        let window = Int(h.configuration.upstreamSession.initialWindowSize)
        let queued = h.downstreamConnections.map(\.session.queuedDataBytes).reduce(0, +)
        #expect(queued + slow.socket.unread <= streams.count * window + slow.socket.highWatermark)

        slow.close()
        try h.pump()
        #expect(h.streamsActive == 0)
        for id in h.upstreams[0].streams(path: "/svc/Stream") {
            #expect(h.upstreams[0].closed(id) == H2ErrorCode.cancel)
        }
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    /// The other half of write back-pressure: a client whose socket was full for a while reads
    /// again; every stream completes with every byte, in order.
    @Test func aClientThatResumesReadingGetsEveryByte() throws {
        let h = BridgeHarness()
        let streamBody = Self.filler(3 << 20)
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in
                peer.respond(id)
                peer.send(id, streamBody)
                peer.end(id, trailers: Peer.grpcTrailers(status: 0))
            }
        }
        let client = try h.connectClient()
        client.readsSocket = false
        let streams = try (0..<4).map { _ in try client.open(BackToBack.request(path: "/svc/Stream")) }
        try h.pump()
        #expect(!client.channel.isWritable)
        #expect(h.downstreamConnections.first?.session.dataPaused == true)
        client.readsSocket = true
        try h.pump()
        for id in streams {
            #expect(client.data(id) == streamBody, "stream \(id)")
            #expect(client.grpcStatus(id)?.status == "0")
            #expect(client.closed(id) == 0)
        }
        #expect(h.streamsActive == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    /// A client that reads, but slowly (just enough each time for its socket to turn writable):
    /// what the proxy holds for it (queued in its session, or written to the socket and not
    /// read) must stay within the stream windows it gives the upstream (`Docs/configuration.md`,
    /// memory bounds: response DATA ≤ streams × `initial_window_size` per client connection).
    @Test func aSlowReaderHoldsTheProxyToItsStreamWindows() throws {
        let h = BridgeHarness()
        let streamBody = Self.filler(4 << 20)
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in
                peer.respond(id)
                peer.send(id, streamBody)
                peer.end(id, trailers: Peer.grpcTrailers(status: 0))
            }
        }
        let client = try h.connectClient()
        client.readsSocket = false
        let streams = try (0..<4).map { _ in try client.open(BackToBack.request(path: "/svc/Stream")) }
        try h.pump()
        let window = Int(h.configuration.upstreamSession.initialWindowSize)
        let bound = streams.count * window + client.socket.highWatermark + Peer.readsPerCycle * Peer.readSize
        var worst = 0
        var rounds = 0
        while h.streamsActive > 0 && client.closed(streams[0]) == nil && rounds < 10_000 {
            rounds += 1
            let held = h.downstreamConnections.map(\.session.queuedDataBytes).reduce(0, +) + client.socket.unread
            worst = max(worst, held)
            try client.readSome(max(1, client.socket.unread - client.socket.lowWatermark + 1))
            try h.pump()
        }
        #expect(worst <= bound, "held up to \(worst) bytes for a slow reader; bound \(bound)")
        client.readsSocket = true
        try h.pump()
        for id in streams { #expect(client.data(id).readableBytes == streamBody.readableBytes) }
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    /// Input 3: 16 uploads to an upstream handler that never reads (no WINDOW_UPDATE) must not
    /// keep a unary call on the same client connection from completing.
    @Test func stalledUploadsDoNotStarveAUnaryCallOnTheSameConnection() throws {
        let h = BridgeHarness()
        h.upstreamSettings.initialWindowSize = 65_535
        h.upstreamSetup = { peer in
            peer.readsStream = { [unowned peer] id in peer.requests[id]?.first(":path") != "/svc/Upload" }
            peer.onEvent = Peer.unary
        }
        let client = try h.connectClient()
        let upload = Self.filler(2 << 20)
        let uploads = try (0..<16).map { _ in
            try client.open(BackToBack.request(path: "/svc/Upload"), body: upload, end: true)
        }
        try h.pump()
        #expect(h.streamsActive == 16)

        let unary = try client.open(body: Peer.grpcMessage(100))
        try h.pump()
        #expect(client.grpcStatus(unary)?.status == "0")
        #expect(client.closed(unary) == 0)
        #expect(h.upstreams.count == 1)
        for id in uploads { #expect(client.closed(id) == nil) }

        client.close()
        try h.pump()
        #expect(h.streamsActive == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    /// Input 4: a client that never reads its socket keeps sending GETs, each answered with
    /// ~6 KB of headers (outside flow control). The proxy must bound what it queues: GOAWAY
    /// ENHANCE_YOUR_CALM once `maxQueuedControlBytes` piled up while the socket was full.
    @Test func aClientThatNeverReadsIsCutOffBeforeHeadersPileUp() throws {
        let cap = 256 << 10
        let h = BridgeHarness { $0.maxQueuedControlBytes = cap }
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in
                // Distinct values over 4 KiB: HPACK cannot shrink them.
                let big = String(repeating: "\(id % 10)", count: 6000)
                peer.respond(id, HeaderBlock([(":status", "200"), ("x-big", big)]), end: true)
            }
        }
        let client = try h.connectClient()
        client.readsSocket = false
        var sent = 0
        while !client.isClosed && sent < 2000 {
            for _ in 0..<5 { try client.open(Self.get("/get/\(sent)")) }
            sent += 5
            try h.pump()
        }
        #expect(client.isClosed, "still open after \(sent) requests and \(client.bytesFromProxy) bytes")
        #expect(h.metrics.limitQueuedControlBytes.value == 1)
        // Written before the socket filled (the watermark), plus the cap, plus what two flushes
        // add (the cap is checked after each flush; 5 responses at most here).
        let flush = 5 * 6100
        #expect(client.bytesFromProxy <= client.socket.highWatermark + cap + 2 * flush)
        client.readsSocket = true
        try h.pump()
        #expect(client.goAways.last == H2ErrorCode.enhanceYourCalm)
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    /// Over `connectionBufferBudget` of unforwarded DATA, a client connection gets its new
    /// streams refused (REFUSED_STREAM, retryable); its open streams go on, and once the
    /// upstream takes the bytes new streams are accepted again.
    @Test func aClientOverItsBufferBudgetHasNewStreamsRefusedUntilItDrains() throws {
        let h = BridgeHarness { $0.connectionBufferBudget = 256 << 10 }
        h.upstreamSettings.initialWindowSize = 65_535
        h.upstreamSetup = { peer in
            peer.readsStream = { [unowned peer] id in peer.requests[id]?.first(":path") != "/svc/Upload" }
            peer.onEvent = Peer.unary
        }
        let client = try h.connectClient()
        let uploads = try (0..<2).map { _ in
            try client.open(BackToBack.request(path: "/svc/Upload"), body: Self.filler(400_000))
        }
        try h.pump()
        #expect(h.bufferedRequestBytes > 256 << 10)
        let refused = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        #expect(client.closed(refused) == H2ErrorCode.refusedStream)
        #expect(h.metrics.limitConnectionBufferBudget.value == 1)
        // The upstream reads the uploads: the proxy drains, and takes new streams again.
        let upstream = h.upstreams[0]
        upstream.readsStream = { _ in true }
        for id in upstream.streams(path: "/svc/Upload") { upstream.release(id) }
        try h.pump()
        for id in uploads { #expect(client.grpcStatus(id)?.status == "0") }
        #expect(h.bufferedRequestBytes == 0)
        let accepted = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        #expect(client.grpcStatus(accepted)?.status == "0")
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    /// Request trailers reach the upstream and end its stream.
    @Test func requestTrailersAreForwarded() throws {
        let h = BridgeHarness()
        h.upstreamSetup = { $0.onEvent = Peer.unary }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(7), end: false)
        client.end(id, trailers: HeaderBlock([("x-checksum", "abc")]))
        try h.pump()
        let blocks = h.upstreams[0].headers(1)
        #expect(blocks.count == 2)
        #expect(blocks.last?.0.pairs.map(\.name) == ["x-checksum"])
        #expect(blocks.last?.2 == true)
        #expect(client.grpcStatus(id)?.status == "0")
        try self.expectEmptyAfterClosing(h)
    }

    /// Draining: GOAWAY to the client, its open stream finishes, then the connection closes.
    @Test func drainingLetsOpenStreamsFinishThenClosesTheClient() throws {
        let h = BridgeHarness()
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        h.loop.isDraining = true
        for (_, connection) in h.loop.downstreams { connection.beginShutdown() }
        try h.advanceTime(by: h.configuration.goAwayGrace)
        #expect(client.goAways == [H2ErrorCode.noError, H2ErrorCode.noError])
        #expect(!client.isClosed)
        h.upstreams[0].respondGRPC(1, body: Peer.grpcMessage(2))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        #expect(client.isClosed)
        #expect(h.downstreamConnectionsActive == 0)
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    // MARK: Replays after REFUSED_STREAM

    @Test func aRefusedStreamWithASmallBodyIsReplayed() throws {
        let h = BridgeHarness()
        let body = Peer.grpcMessage(10_000, seed: 9)
        h.upstreamSetup = { peer in
            var refused = false
            peer.onEvent = Peer.answering { peer, id, _ in
                if refused {
                    peer.respondGRPC(id, body: Peer.grpcMessage(16))
                } else {
                    refused = true
                    peer.reset(id, H2ErrorCode.refusedStream)
                }
            }
        }
        let client = try h.connectClient()
        let id = try client.open(body: body)
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        #expect(client.closed(id) == 0)
        #expect(h.metrics.retries.value == 1)
        let attempts = h.upstreams.flatMap { peer in peer.streams(path: "/svc/Method").map { peer.data($0) } }
        #expect(attempts.count == 2)
        #expect(attempts.allSatisfy { $0 == body })
        #expect(h.streamsActive == 0)
        #expect(h.bufferedRequestBytes == 0)
        try self.expectEmptyAfterClosing(h)
    }

    /// Over the 64 KiB kept for a replay: the client stream is reset with REFUSED_STREAM, so a
    /// gRPC client retries it itself (UNAVAILABLE would stop its transparent retry).
    @Test func aRefusedStreamWithALargeBodyIsRefusedToTheClient() throws {
        let h = BridgeHarness()
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in peer.reset(id, H2ErrorCode.refusedStream) }
        }
        let client = try h.connectClient()
        let id = try client.open(body: Self.filler(100_000))
        try h.pump()
        #expect(client.closed(id) == H2ErrorCode.refusedStream)
        #expect(client.headers(id).isEmpty)
        #expect(h.metrics.retries.value == 0)
        #expect(h.streamsActive == 0)
        #expect(h.bufferedRequestBytes == 0)
        try self.expectEmptyAfterClosing(h)
    }

    // MARK: Interop details

    @Test(arguments: ["Trailers", "TRAILERS", "trailers"])
    func teTrailersInAnyCaseReachesTheUpstreamAsLowerCase(_ value: String) throws {
        let h = BridgeHarness()
        h.upstreamSetup = { $0.onEvent = Peer.unary }
        let client = try h.connectClient()
        var request = BackToBack.request(grpc: false)
        request.append(name: "content-type", value: "application/grpc")
        request.append(name: "te", value: value)
        let id = try client.open(request, body: Peer.grpcMessage(4))
        try h.pump()
        let forwarded = try #require(h.upstreams.first?.requests[1])
        #expect(forwarded.pairs.filter { $0.name == "te" }.map(\.value) == ["trailers"])
        #expect(client.grpcStatus(id)?.status == "0")
        try self.expectEmptyAfterClosing(h)
    }

    @Test(arguments: [false, true])
    func aGRPCMessageEndingInASpacePassesThrough(trailersOnly: Bool) throws {
        let h = BridgeHarness()
        h.upstreamSetup = { peer in
            peer.onEvent = Peer.answering { peer, id, _ in
                if trailersOnly {
                    let block = Peer.grpcResponse([("grpc-status", "3"), ("grpc-message", "bad name ")])
                    peer.respond(id, block, end: true)
                } else {
                    peer.respondGRPC(id, body: Peer.grpcMessage(1), status: 3, message: "bad name ")
                }
            }
        }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(4))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "3")
        #expect(client.grpcStatus(id)?.message == "bad name ")
        #expect(client.closed(id) == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    // MARK: Losing one side

    @Test(arguments: [false, true])
    func losingTheClientConnectionResetsTheUpstreamStream(responseStarted: Bool) throws {
        let h = BridgeHarness()
        h.upstreamSetup = { peer in
            peer.onEvent = { peer, event in
                guard responseStarted, case .headers(let id, _, .request, _) = event else { return }
                peer.respond(id)
                peer.send(id, Peer.grpcMessage(100))
            }
        }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(1000), end: false)
        try h.pump()
        #expect(h.upstreams.first?.requests[1] != nil)
        #expect(client.headers(id).count == (responseStarted ? 1 : 0))
        client.close()
        try h.pump()
        #expect(h.upstreams.first?.closed(1) == H2ErrorCode.cancel)
        #expect(h.streamsActive == 0)
        #expect(h.downstreamConnectionsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    @Test(arguments: [false, true])
    func losingTheUpstreamConnectionGivesTheClientUnavailable(responseStarted: Bool) throws {
        let h = BridgeHarness()
        h.upstreamSetup = { peer in
            peer.onEvent = { peer, event in
                guard responseStarted, case .headers(let id, _, .request, _) = event else { return }
                peer.respond(id)
                peer.send(id, Peer.grpcMessage(100))
            }
        }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(1000), end: false)
        try h.pump()
        let upstream = try #require(h.upstreams.first)
        upstream.close()
        try h.pump()
        let blocks = client.headers(id)
        #expect(blocks.count == (responseStarted ? 2 : 1))
        #expect(blocks.first?.0.first(":status") == "200")
        #expect(blocks.last?.2 == true)
        #expect(client.grpcStatus(id)?.status == "14")
        if responseStarted { #expect(client.data(id) == Peer.grpcMessage(100)) }
        // The client's request is still open: the proxy ends its side; the client's reset or
        // END_STREAM closes the stream.
        client.end(id)
        try h.pump()
        #expect(client.closed(id) != nil)
        #expect(h.streamsActive == 0)
        #expect(h.upstreamConnectionsActive == 0)
        #expect(h.bufferedRequestBytes == 0)
        try self.expectEmptyAfterClosing(h)
    }

    @Test func aPlainHTTPStreamWhoseUpstreamIsLostGets502() throws {
        let h = BridgeHarness()
        let client = try h.connectClient()
        let id = try client.open(Self.get("/x"))
        try h.pump()
        try #require(h.upstreams.first).close()
        try h.pump()
        #expect(client.headers(id).first?.0.first(":status") == "502")
        #expect(client.closed(id) == 0)
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    // MARK: Upstream GOAWAY and the pool's timers

    @Test func afterAnUpstreamGoAwayOpenStreamsFinishAndNewOnesUseANewConnection() throws {
        let h = BridgeHarness()
        h.onlyLaterUpstreamsAnswer()
        let client = try h.connectClient()
        let first = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        let old = h.upstreams[0]
        old.goAway()
        try h.pump()
        let second = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        #expect(h.upstreams.count == 2)
        #expect(client.grpcStatus(second)?.status == "0")
        #expect(!old.isClosed)
        old.respondGRPC(1, body: Peer.grpcMessage(3))
        try h.pump()
        #expect(client.grpcStatus(first)?.status == "0")
        #expect(old.isClosed, "a draining connection closes once its last stream is done")
        #expect(h.streamsActive == 0)
        #expect(h.upstreamConnectionsActive == 1)
        try self.expectEmptyAfterClosing(h)
    }

    /// Streams above a GOAWAY's last stream ID were not processed: they are replayed on a new
    /// connection, the one below it finishes on the old one.
    @Test func streamsAboveAnUpstreamGoAwayAreReplayedOnANewConnection() throws {
        let h = BridgeHarness()
        h.onlyLaterUpstreamsAnswer()
        let client = try h.connectClient()
        let kept = try client.open(body: Peer.grpcMessage(5))
        let refused = try client.open(body: Peer.grpcMessage(6))
        try h.pump()
        let old = h.upstreams[0]
        #expect(old.requests.count == 2)
        old.goAway(lastStreamID: 1)
        try h.pump()
        #expect(h.upstreams.count == 2)
        #expect(client.grpcStatus(refused)?.status == "0")
        #expect(h.upstreams[1].data(1) == Peer.grpcMessage(6))
        #expect(h.metrics.retries.value == 1)
        old.respondGRPC(1, body: Peer.grpcMessage(3))
        try h.pump()
        #expect(client.grpcStatus(kept)?.status == "0")
        #expect(old.isClosed)
        #expect(h.streamsActive == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    /// A stream dispatched from the wait queue onto a connection (its HEADERS submitted, not yet
    /// written) when, in the same read cycle, the upstream's GOAWAY arrives: on the flush at
    /// the end of the cycle nghttp2 refuses it and it is replayed; if the socket fails before
    /// that flush (`reset`), the lost connection proves the same, since the HEADERS never left,
    /// and it is replayed too rather than answered 502.
    @Test(arguments: [false, true])
    func aStreamWhoseHeadersNeverLeftIsReplayedWhenItsConnectionGoes(reset: Bool) throws {
        let h = BridgeHarness { $0.maxUpstreamConnectionsPerLoop = 1 }
        h.upstreamSettings.maxConcurrentStreams = 1
        h.onlyLaterUpstreamsAnswer()
        let client = try h.connectClient()
        let first = try client.open(body: Peer.grpcMessage(5))
        let second = try client.open(body: Peer.grpcMessage(6))
        try h.pump()
        let old = h.upstreams[0]
        #expect(old.requests.count == 1)
        #expect(h.loop.pool.waitingStreams == 1)
        // One read cycle: the answer to the first stream (its slot goes to the second), then the
        // GOAWAY, then either the end of the cycle or a connection reset.
        old.respondGRPC(1, body: Peer.grpcMessage(3))
        var answer: [ByteBuffer] = []
        try old.session.produceOutput { answer.append($0) }
        old.goAway(lastStreamID: 1)
        var goAway: [ByteBuffer] = []
        try old.session.produceOutput { goAway.append($0) }
        let pipeline = old.channel.pipeline.syncOperations
        for buffer in answer { pipeline.fireChannelRead(NIOAny(buffer)) }
        #expect(h.loop.pool.waitingStreams == 0, "the freed slot took the waiting stream")
        for buffer in goAway { pipeline.fireChannelRead(NIOAny(buffer)) }
        if reset {
            pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        } else {
            pipeline.fireChannelReadComplete()
        }
        try h.pump()
        #expect(client.grpcStatus(first)?.status == "0")
        #expect(client.grpcStatus(second)?.status == "0", "\(client.grpcStatus(second)?.message ?? "")")
        #expect(old.streams(path: "/svc/Method") == [1], "the old connection never saw the second request")
        #expect(h.upstreams.count == 2)
        #expect(h.upstreams[1].data(1) == Peer.grpcMessage(6))
        #expect(h.metrics.retries.value == 1)
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    /// The upstream closes every stream window (SETTINGS_INITIAL_WINDOW_SIZE 0) mid-upload, then
    /// opens them again: the upload resumes and completes.
    @Test func anUploadSurvivesTheUpstreamShrinkingItsWindowsToZeroAndBack() throws {
        let h = BridgeHarness()
        h.upstreamSettings.initialWindowSize = 65_535
        h.upstreamSetup = { $0.onEvent = Peer.unary }
        let client = try h.connectClient()
        let body = Self.filler(300_000)
        let id = try client.open(body: Peer.grpcMessage(1), end: false)
        try h.pump()
        let upstream = h.upstreams[0]
        upstream.submitSettings(initialWindowSize: 0)
        try h.pump()
        client.send(id, body)
        client.end(id)
        try h.pump()
        #expect(upstream.data(1).readableBytes < 6 + body.readableBytes)
        #expect(client.headers(id).isEmpty)
        upstream.submitSettings(initialWindowSize: 65_535)
        try h.pump()
        #expect(upstream.data(1).readableBytes == 6 + body.readableBytes)
        #expect(client.grpcStatus(id)?.status == "0")
        #expect(h.streamsActive == 0)
        #expect(h.bufferedRequestBytes == 0)
        self.expectNoPeerErrors(h)
        try self.expectEmptyAfterClosing(h)
    }

    @Test func aStreamThatFindsNoUpstreamInTimeGetsUnavailable() throws {
        let h = BridgeHarness { $0.upstreamWaitTimeout = .seconds(2) }
        h.connectMode = .hang
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        try h.advanceTime(by: .seconds(2) - .milliseconds(1))
        #expect(client.headers(id).isEmpty)
        try h.advanceTime(by: .milliseconds(1))
        #expect(client.grpcStatus(id)?.status == "14")
        #expect(client.grpcStatus(id)?.message?.contains("no stream slot") == true)
        #expect(client.closed(id) == 0)
        #expect(h.metrics.limitUpstreamWaitTimeout.value == 1)
        #expect(h.streamsActive == 0)
        try self.expectEmptyAfterClosing(h)
    }

    /// Runs in a child process (an exit test): a connect that fails at once (as
    /// `ClientBootstrap.connect` does when no socket can be made, e.g. EMFILE) trapped the
    /// whole process.
    @Test(arguments: [false, true])
    func anUnreachableUpstreamGivesUnavailable(failsAtOnce: Bool) async {
        await #expect(processExitsWith: .success) { [failsAtOnce] in
            try Self.unreachableUpstream(failsAtOnce: failsAtOnce)
        }
    }

    private static func unreachableUpstream(failsAtOnce: Bool) throws {
        let h = BridgeHarness()
        h.connectMode = failsAtOnce ? .refuse : .hang
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        if !failsAtOnce { try h.failPendingConnects() }
        #expect(client.grpcStatus(id)?.status == "14")
        #expect(client.closed(id) == 0)
        #expect(h.metrics.upstreamConnectErrors.value == 1)
        #expect(h.streamsActive == 0)
        try h.closeAll()
        #expect(h.isEmpty, "left over: \(h.counts)")
        #expect(h.leftAlive.isEmpty, "still alive: \(h.leftAlive)")
    }

    @Test func anIdleUpstreamConnectionIsClosedAfterTheIdleTimeout() throws {
        let h = BridgeHarness { $0.upstreamIdleTimeout = .seconds(30) }
        h.upstreamSetup = { $0.onEvent = Peer.unary }
        let client = try h.connectClient()
        let id = try client.open(body: Peer.grpcMessage(5))
        try h.pump()
        #expect(client.grpcStatus(id)?.status == "0")
        try h.advanceTime(by: .seconds(29))
        #expect(h.upstreamConnectionsActive == 1)
        try h.advanceTime(by: .seconds(1))
        #expect(h.upstreams[0].goAways == [H2ErrorCode.noError])
        #expect(h.upstreams[0].isClosed)
        #expect(h.upstreamConnectionsActive == 0)
        #expect(h.metrics.limitUpstreamIdleTimeout.value == 1)
        try self.expectEmptyAfterClosing(h)
    }
}
