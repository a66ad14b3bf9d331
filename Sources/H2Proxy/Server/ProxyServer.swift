import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The transparent proxy: a listener whose connections are spread over the event loops, each
/// loop with its own upstream pool.
public final class ProxyServer: Sendable {
    public let configuration: ProxyConfiguration
    public let metrics: ProxyMetrics
    let group: EventLoopGroup
    let loops: [NIOLoopBound<ProxyLoop>]
    let logger: Logger
    private let channelBox: NIOLockedValueBox<Channel?> = NIOLockedValueBox(nil)

    public init(
        configuration: ProxyConfiguration, group: EventLoopGroup, metrics: ProxyMetrics,
        observerFactory: StreamObserverFactory? = nil, localResponder: LocalResponder? = nil, logger: Logger
    ) {
        self.configuration = configuration
        self.metrics = metrics
        self.group = group
        self.logger = logger
        var loops: [NIOLoopBound<ProxyLoop>] = []
        let reachability = UpstreamReachability()
        for (index, eventLoop) in group.makeIterator().enumerated() {
            let loop = try! eventLoop.submit {
                NIOLoopBound(
                    ProxyLoop(
                        eventLoop: eventLoop, configuration: configuration, metrics: metrics,
                        observerFactory: observerFactory, localResponder: localResponder, logger: logger,
                        reachability: reachability, shard: .loop(index)),
                    eventLoop: eventLoop)
            }.wait()
            loops.append(loop)
        }
        self.loops = loops
    }

    /// Sizes of the buffer a client connection reads into, in bytes: NIO's adaptive allocator
    /// with a first buffer of 512 instead of its 2,048 (min 64, max 64 KiB as NIO's).
    ///
    /// The channel keeps its buffer for the next read, so an idle connection holds one for
    /// good; what a client sends first (preface, SETTINGS, WINDOW_UPDATE, a gRPC HEADERS
    /// block) fits in 512. A read that fills the buffer doubles the next one, so a busy
    /// connection outgrows it within its first reads.
    static let clientReceiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

    /// Binds the listener; returns the bound address (port 0 picks a free one).
    public func start() async throws -> SocketAddress {
        let loops = self.loops
        let channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: Self.clientReceiveBuffers)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let bound = loops.first(where: { $0.eventLoop === channel.eventLoop }) else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    let loop = bound.value
                    try channel.pipeline.syncOperations.addTLSHandler(
                        loop.configuration.downstreamTLS, metrics: loop.configuration.tlsMetrics, logger: loop.logger)
                    try channel.pipeline.syncOperations.addHandler(DownstreamConnection(loop: loop))
                }
            }
            .bind(host: self.configuration.listenHost, port: self.configuration.listenPort)
            .get()
        self.channelBox.withLockedValue { $0 = channel }
        for bound in self.loops {
            try await bound.eventLoop.submit { bound.value.startHousekeeping() }.get()
        }
        return channel.localAddress!
    }

    /// Graceful shutdown: stop accepting, GOAWAY every client, let in-flight streams finish for
    /// up to `timeout`, then end the streams still open properly (UNAVAILABLE trailers for
    /// gRPC, 502 or RST_STREAM otherwise) before closing the connections.
    ///
    /// Cancelling the calling task (a second SIGTERM) cuts the wait short the same way.
    public func drain(timeout: TimeAmount) async {
        if let channel = self.channelBox.withLockedValue({ $0 }) {
            try? await channel.close()
        }
        for bound in self.loops {
            try? await bound.eventLoop.submit {
                let loop = bound.value
                loop.isDraining = true
                for (_, c) in loop.downstreams { c.beginShutdown() }
                loop.flushDirty()
            }.get()
        }
        let deadline = NIODeadline.now() + timeout
        var clientsGone = false
        while NIODeadline.now() < deadline && !Task.isCancelled {
            var open = 0
            for bound in self.loops {
                open += (try? await bound.eventLoop.submit { bound.value.downstreams.count }.get()) ?? 0
            }
            if open == 0 {
                clientsGone = true
                break
            }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        // With every client gone, what is left is this sidecar's own calls (probes): the drain
        // timeout did not pass, so the cause does not say it did.
        let cause =
            Task.isCancelled
            ? "sidecar shutting down: stopped by a second signal"
            : clientsGone
                ? "sidecar shutting down"
                : "sidecar shutting down: drain timeout of \(UpstreamFailure.describe(timeout)) passed"
        var connections = 0
        var streams = 0
        for bound in self.loops {
            let (c, s) =
                (try? await bound.eventLoop.submit {
                    let loop = bound.value
                    loop.stopHousekeeping()
                    return loop.endEverything(cause: cause)
                }.get()) ?? (0, 0)
            connections += c
            streams += s
        }
        if connections > 0 {
            self.logger.warning(
                "drain ended with streams in flight: ending them with UNAVAILABLE",
                metadata: ["connections": "\(connections)", "streams": "\(streams)", "reason": "\(cause)"])
        }
    }

    /// Makes a call of this sidecar's own (a probe) to `host:port` on `eventLoop`, through that
    /// loop's connection pool for the address: the same connections live traffic uses when the
    /// address is the upstream's. The observer factory sees it like any other stream.
    public func call(
        host: String, port: Int, request: HeaderBlock, body: ByteBuffer, timeout: TimeAmount, on eventLoop: EventLoop
    ) -> EventLoopFuture<LocalCallResult> {
        let batch = LocalCallBatch([
            LocalCallBatch.Call(host: host, port: port, request: request, body: body, timeout: timeout)
        ])
        return self.call(batch, on: eventLoop)[0]
    }

    /// The event loops, for spreading calls over them.
    public var eventLoops: [EventLoop] { self.loops.map(\.eventLoop) }

    /// How long `/readyz` waits for the upstream: 1 s, or `connect_timeout` if shorter.
    public var readinessDeadline: TimeAmount { min(.seconds(1), self.configuration.connectTimeout) }

    /// Whether the upstream takes calls now (for `/readyz`): an empty HTTP/2 SETTINGS frame,
    /// sent on a ready connection of the first event loop's upstream pool (the pool opens one,
    /// TLS and SETTINGS included, if it has none), acknowledged within `deadline`. Concurrent
    /// callers share one check, so they share its round trip and at most one new connection.
    ///
    /// SETTINGS rather than PING: gRPC servers count a PING on a connection without calls as
    /// abuse (grpcio here answers the fourth PING on an idle connection with GOAWAY `ENHANCE_YOUR_CALM`,
    /// "too_many_pings"), so a readiness PING every few seconds would cut the connection.
    public func checkReadiness(deadline: TimeAmount? = nil) async -> UpstreamReadiness {
        let deadline = deadline ?? self.readinessDeadline
        let bound = self.loops[0]
        let answer = bound.eventLoop.flatSubmit { bound.value.pool.checkReadiness(deadline: deadline) }
        return (try? await answer.get())
            ?? UpstreamReadiness(isReady: false, detail: "event loop unavailable (shutting down)")
    }

    public var isListening: Bool { self.channelBox.withLockedValue { $0?.isActive ?? false } }
}
