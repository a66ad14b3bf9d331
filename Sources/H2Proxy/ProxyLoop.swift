import Logging
import NIOCore

/// A connection whose nghttp2 session may have frames to write.
protocol H2Connection: AnyObject {
    var isDirty: Bool { get set }
    /// Writes what the session has, then reacts to the events that writing produced.
    func flushNow()
}

/// Per-event-loop state: the upstream pool for this loop, the open client connections, and
/// the list of connections with frames to write.
///
/// A downstream connection and the upstream connections its streams ride on share one
/// loop, so a stream is bridged by plain method calls, without locks.
final class ProxyLoop {
    let eventLoop: EventLoop
    let configuration: ProxyConfiguration
    let metrics: ProxyMetrics
    let observerSource: LoopObserverSource?
    let logger: Logger
    private(set) var pool: UpstreamPool!
    var downstreams: [ObjectIdentifier: DownstreamConnection] = [:]
    var isDraining = false

    private var dirty: [H2Connection] = []
    private var flushing = false

    init(
        eventLoop: EventLoop, configuration: ProxyConfiguration, metrics: ProxyMetrics,
        observerFactory: StreamObserverFactory?, logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.metrics = metrics
        self.observerSource = observerFactory?.makeLoopObserverSource(for: eventLoop)
        self.logger = logger
        self.pool = UpstreamPool(loop: self)
    }

    func markDirty(_ connection: H2Connection) {
        guard !connection.isDirty else { return }
        connection.isDirty = true
        self.dirty.append(connection)
    }

    /// Writes every dirty connection's frames; called at the end of each loop entry point
    /// (read complete, connect, close, timer), never from inside an nghttp2 callback.
    func flushDirty() {
        guard !self.flushing else { return }
        self.flushing = true
        defer { self.flushing = false }
        while let next = self.dirty.popLast() {
            next.isDirty = false
            next.flushNow()
        }
    }
}
