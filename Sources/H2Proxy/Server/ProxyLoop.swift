import Logging
import Metrics
import NIOCore

/// Per-event-loop state: the upstream pool for this loop, the open client connections, and
/// the list of connections with frames to write.
///
/// A downstream connection and the upstream connections its streams ride on share one
/// loop, so a stream is bridged by plain method calls, without locks.
final class ProxyLoop {
    let eventLoop: EventLoop
    let configuration: ProxyConfiguration
    let metrics: ProxyMetrics
    /// This loop's cells in the counters and histograms it records per stream (``MetricShard``):
    /// only this loop's thread records with it.
    let shard: MetricShard
    /// Where every stream measurement on this loop reads the time (see ``StreamClock``).
    let clock: StreamClock
    /// Header blocks every session on this loop decodes into and gives back to.
    let headerBlocks = HeaderBlockPool(limit: HeaderBlockPool.loopLimit)
    /// What the nghttp2 sessions of this loop allocate from (see ``H2MemoryPool``).
    let memory = H2MemoryPool(limit: H2MemoryPool.loopLimit)
    let observerSource: LoopObserverSource?
    let logger: Logger
    /// Shared by the loops of one server: connect failures are logged once per change.
    let reachability: UpstreamReachability
    /// The pool to the configured upstream, which carries live traffic.
    private(set) var pool: UpstreamPool!
    /// Pools by `host:port`, the upstream's included, for calls this sidecar makes itself.
    private var pools: [PoolKey: UpstreamPool] = [:]
    /// Pools dropped by ``retainPools(_:)`` whose connections or waiting streams are not done:
    /// kept until they are, since their connections refer to them.
    private var retiredPools: [ObjectIdentifier: UpstreamPool] = [:]
    let localResponder: LocalResponder?
    var downstreams: [ObjectIdentifier: DownstreamConnection] = [:]
    /// Replaces the TCP connect of upstream connections (tests wire `EmbeddedChannel`s here):
    /// given the connection's handler and the pool's address, puts the handler on a channel.
    var upstreamConnector: ((UpstreamConnection, String, Int) -> EventLoopFuture<Void>)?
    var isDraining = false

    private var dirty: [H2Connection] = []
    private var limitsHit: Set<String> = []
    private var housekeeping: Scheduled<Void>?
    private var flushing = false
    /// How many sessions are handing out events now. Writing a session from inside another
    /// session's event handler (say, a connect that fails at once and flushes) would re-enter
    /// it: the flush waits for the entry point's own flush instead.
    var deliveringEvents = 0

    init(
        eventLoop: EventLoop, configuration: ProxyConfiguration, metrics: ProxyMetrics,
        observerFactory: StreamObserverFactory?, localResponder: LocalResponder?, logger: Logger,
        reachability: UpstreamReachability = UpstreamReachability(), clock: StreamClock = StreamClock(),
        shard: MetricShard = .shared
    ) {
        self.clock = clock
        self.shard = shard
        self.reachability = reachability
        self.localResponder = localResponder
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.metrics = metrics
        self.observerSource = observerFactory?.makeLoopObserverSource(for: eventLoop, clock: clock, shard: shard)
        self.logger = logger
        let main = UpstreamPool(loop: self, host: configuration.upstreamHost, port: configuration.upstreamPort)
        self.pool = main
        self.pools[Self.poolKey(host: configuration.upstreamHost, port: configuration.upstreamPort)] = main
    }

    /// Starts the once-a-second check of client connection timers (limits, not measurements:
    /// they read the event loop's time, not ``clock``).
    func startHousekeeping() {
        self.housekeeping = self.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
            let now = NIODeadline.now()
            for (_, c) in self.downstreams { c.checkLimits(now: now) }
            self.flushDirty()
            self.startHousekeeping()
        }
    }

    func stopHousekeeping() {
        self.housekeeping?.cancel()
    }

    /// Logs a limit once when it starts being hit and once when it stops.
    func noteLimit(_ name: String, hit: Bool) {
        if hit, self.limitsHit.insert(name).inserted {
            self.logger.warning("limit reached", metadata: ["limit": "\(name)"])
        } else if !hit, self.limitsHit.remove(name) != nil {
            self.logger.notice("limit no longer reached", metadata: ["limit": "\(name)"])
        }
    }

    /// The pool for `host:port`; the upstream's own pool when that is the address, so that
    /// calls to it share the connections live traffic uses.
    func pool(host: String, port: Int) -> UpstreamPool {
        let key = Self.poolKey(host: host, port: port)
        if let p = self.pools[key] { return p }
        let p = UpstreamPool(loop: self, host: host, port: port)
        self.pools[key] = p
        return p
    }

    /// A pool's address as the key of ``pools``: host and port as they are, no string built
    /// per lookup (a probe looks its pool up on every call).
    struct PoolKey: Hashable, Sendable {
        var host: String
        var port: Int
    }

    static func poolKey(host: String, port: Int) -> PoolKey { PoolKey(host: host, port: port) }

    /// Retires every pool whose key is not in `keys`, except the upstream's: its connections
    /// close once their streams are done, and a later ``pool(host:port:)`` for the address
    /// starts a new pool.
    func retainPools(_ keys: Set<PoolKey>) {
        for (key, pool) in self.pools where pool !== self.pool && !keys.contains(key) {
            self.pools.removeValue(forKey: key)
            self.retiredPools[ObjectIdentifier(pool)] = pool
            pool.retire()
        }
        self.flushDirty()
    }

    /// A retired pool opened a connection again (a retried stream): keep it until it is done.
    func keepRetiredPool(_ pool: UpstreamPool) {
        self.retiredPools[ObjectIdentifier(pool)] = pool
    }

    /// A retired pool has no connection and no waiting stream left.
    func retiredPoolDone(_ pool: UpstreamPool) {
        self.retiredPools.removeValue(forKey: ObjectIdentifier(pool))
    }

    /// Every pool, retired ones included (for shutdown).
    var allPools: [UpstreamPool] { Array(self.pools.values) + Array(self.retiredPools.values) }

    /// The end of a drain: every stream still open gets `cause` as a proper ending (UNAVAILABLE
    /// trailers, a 502 or RST_STREAM; see ``ProxyStream``), its frames are written, and every
    /// connection closes. Returns the client connections and streams that were still open.
    func endEverything(cause: String) -> (connections: Int, streams: Int) {
        let downstreams = Array(self.downstreams.values)
        let streams = downstreams.reduce(0) { $0 + $1.streams.count }
        for pool in self.allPools { pool.abandon(cause) }
        for connection in downstreams {
            connection.flushNow()
            connection.forceClose()
        }
        self.flushDirty()
        return (downstreams.count, streams)
    }

    func markDirty(_ connection: H2Connection) {
        guard !connection.isDirty else { return }
        connection.isDirty = true
        self.dirty.append(connection)
    }

    /// Writes every dirty connection's frames; called at the end of each loop entry point
    /// (read complete, connect, close, timer), never from inside an nghttp2 callback.
    func flushDirty() {
        guard !self.flushing, self.deliveringEvents == 0 else { return }
        self.flushing = true
        defer { self.flushing = false }
        // One reading for the whole flush: "sent" for every request HEADERS it writes and
        // "ended" for every stream that ends in it (StreamClock).
        self.clock.withSharedReading {
            while let next = self.dirty.popLast() {
                next.isDirty = false
                next.flushNow()
            }
        }
    }
}
