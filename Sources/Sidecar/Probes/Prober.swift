import H2Proxy
import Logging
import Metrics
import NIOCore

/// Runs probes on schedule through the proxy's upstream pools and records the results.
///
/// The targets are split over the event loops by a hash of their key, one ``ProbeShard`` per
/// loop: each probe runs, and is recorded, on the loop its target hashes to, so probes to the
/// upstream share the connections that live traffic uses there. The discovery sources are
/// merged on the first loop.
public final class Prober: Sendable {
    let proxy: ProxyServer
    let loop: EventLoop
    let request: ProbeRequest
    let metrics: ProbeMetrics
    let logger: Logger
    let shards: [ProbeShard]
    private let box: NIOLoopBoundBox<Sources?>
    /// The least time between two runs of a shard's probes (``ProbeSchedule/coalescing``): a
    /// probe starts up to this long after its slot.
    static let coalescing: TimeAmount = .milliseconds(50)

    /// The targets of each discovery source, and the series labels of all of them.
    final class Sources {
        var bySource: [String: [ProbeTarget]] = [:]
        var seriesLabels: Set<ProbeTarget.SeriesLabels> = []
    }

    init(proxy: ProxyServer, request: ProbeRequest, metrics: ProbeMetrics, logger: Logger) {
        self.proxy = proxy
        self.loop = proxy.eventLoops[0]
        self.request = request
        self.metrics = metrics
        self.logger = logger
        let loops = proxy.eventLoops
        self.shards = Self.concurrencyShares(request.config.maxConcurrency, loops: loops.count).enumerated().map {
            ProbeShard(
                loop: loops[$0.offset], proxy: proxy, request: request, maxConcurrency: $0.element, metrics: metrics,
                logger: logger)
        }
        // Created empty here (any thread), filled on the loop before anything else runs there.
        self.box = NIOLoopBoundBox.makeEmptyBox(valueType: Sources.self, eventLoop: self.loop)
        let box = self.box
        self.loop.execute { box.value = Sources() }
    }

    /// Starts ticking; targets come from ``setTargets(source:_:)``.
    public func start() {
        for shard in self.shards { shard.start() }
    }

    public func stop() {
        for shard in self.shards { shard.stop() }
    }

    /// Replaces the targets of one discovery source (`static`, `file`, `consul`).
    public func setTargets(source: String, _ targets: [ProbeTarget]) {
        self.loop.execute {
            let sources = self.box.value!
            sources.bySource[source] = targets
            var parts = [[String: ProbeTarget]](repeating: [:], count: self.shards.count)
            var labels: Set<ProbeTarget.SeriesLabels> = []
            for (_, list) in sources.bySource {
                for t in list {
                    let key = t.key
                    parts[self.shardIndex(key)][key] = t
                    labels.insert(t.seriesLabels)
                }
            }
            let gone = sources.seriesLabels.subtracting(labels)
            sources.seriesLabels = labels
            for (shard, part) in zip(self.shards, parts) { shard.setTargets(part, goneSeries: gone) }
            self.metrics.setTargetCount(source: source, targets.count)
            // The pools of addresses no target uses any more close once their probes are done.
            self.proxy.retainPools(
                for: parts.flatMap(\.values).map {
                    let address = self.request.address(for: $0)
                    return (address.host, address.port)
                })
        }
    }

    /// Each shard's share of `probes.max_concurrency`: one shard per loop (fewer only when
    /// `maxConcurrency` is smaller than `loops`), each at least 1, adding up to `maxConcurrency`.
    static func concurrencyShares(_ maxConcurrency: Int, loops: Int) -> [Int] {
        let count = max(1, min(loops, maxConcurrency))
        return (0..<count).map { maxConcurrency / count + ($0 < maxConcurrency % count ? 1 : 0) }
    }

    /// The shard (and so the event loop) of the target with `key`.
    func shardIndex(_ key: String) -> Int {
        var hasher = Hasher()
        hasher.combine(key)
        return Int(UInt(bitPattern: hasher.finalize()) % UInt(self.shards.count))
    }

    /// The latest results of every target, for the status page's probe matrix.
    public func snapshot() async -> [ProbeStatus] {
        var histories: [ProbeHistory] = []
        for shard in self.shards { histories += (try? await shard.histories().get()) ?? [] }
        return histories.map { h in
            var status = ProbeStatus(
                hop: self.request.hop, sourceRegion: self.request.region, target: h.target.name,
                targetRegion: h.target.region, kind: h.target.kind.rawValue, result: h.last.result.rawValue,
                code: h.last.code, message: h.last.message, lastMilliseconds: h.last.seconds * 1000,
                successRatio: h.successRatio, p50Milliseconds: h.p50 * 1000, count: h.total)
            status.address = self.request.address(for: h.target).description
            status.targetAddress = h.target.address.description
            return status
        }
    }
}
