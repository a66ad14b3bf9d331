import H2Proxy
import Logging
import Metrics
import NIOCore

/// Runs probes on schedule through the proxy's upstream pools and records the results.
///
/// Its state lives on one event loop (the first); each probe runs on the loop its target
/// hashes to, so probes to the upstream share the connections that live traffic uses there.
public final class Prober: Sendable {
    let proxy: ProxyServer
    let loop: EventLoop
    let request: ProbeRequest
    let metrics: ProbeMetrics
    let logger: Logger
    private let box: NIOLoopBoundBox<State?>
    private var state: NIOLoopBoundBox<State?> { self.box }
    static let tick: TimeAmount = .milliseconds(20)

    final class State {
        var schedule: ProbeSchedule
        var sources: [String: [ProbeTarget]] = [:]
        var task: RepeatedTask?
        var lastResult: [String: ProbeResult] = [:]
        var history: [String: ProbeHistory] = [:]
        /// Each target's series, looked up once (not per probe).
        var series: [String: ProbeMetrics.TargetSeries] = [:]
        init(schedule: ProbeSchedule) { self.schedule = schedule }
    }

    init(proxy: ProxyServer, request: ProbeRequest, metrics: ProbeMetrics, logger: Logger) {
        self.proxy = proxy
        self.loop = proxy.eventLoops[0]
        self.request = request
        self.metrics = metrics
        self.logger = logger
        let schedule = ProbeSchedule(
            defaultInterval: request.config.interval, maxConcurrency: request.config.maxConcurrency)
        // Created empty here (any thread), filled on the loop before anything else runs there.
        self.box = NIOLoopBoundBox.makeEmptyBox(valueType: State.self, eventLoop: self.loop)
        let box = self.box
        self.loop.execute { box.value = State(schedule: schedule) }
    }

    /// Starts ticking; targets come from ``setTargets(source:_:)``.
    public func start() {
        self.loop.execute {
            let state = self.state.value!
            state.task = self.loop.scheduleRepeatedTask(initialDelay: Self.tick, delay: Self.tick) { _ in
                self.runDue()
            }
        }
    }

    public func stop() {
        self.loop.execute { self.state.value!.task?.cancel() }
    }

    /// Replaces the targets of one discovery source (`static`, `file`, `consul`).
    public func setTargets(source: String, _ targets: [ProbeTarget]) {
        self.loop.execute {
            let state = self.state.value!
            state.sources[source] = targets
            var all: [String: ProbeTarget] = [:]
            for (_, list) in state.sources { for t in list { all[t.key] = t } }
            let before = state.schedule.entries.values.map(\.target)
            state.schedule.update(targets: Array(all.values), now: .now())
            for gone in before where all[gone.key] == nil {
                state.history.removeValue(forKey: gone.key)
                state.lastResult.removeValue(forKey: gone.key)
                state.series.removeValue(forKey: gone.key)
                if !all.values.contains(where: {
                    $0.name == gone.name && $0.region == gone.region && $0.kind == gone.kind
                }) {
                    self.metrics.removeTarget(name: gone.name, targetRegion: gone.region, kind: gone.kind.rawValue)
                }
            }
            self.metrics.setTargetCount(source: source, targets.count)
            // The pools of addresses no target uses any more close once their probes are done.
            self.proxy.retainPools(
                for: all.values.map {
                    let address = self.request.address(for: $0)
                    return (address.host, address.port)
                })
        }
    }

    private func runDue() {
        let state = self.state.value!
        let due = state.schedule.due(now: .now())
        guard !due.isEmpty else { return }
        let loops = self.proxy.eventLoops
        for target in due {
            let timeout = target.timeout ?? self.request.config.timeout
            let (address, headers, body) = self.request.make(for: target, timeout: timeout)
            var hasher = Hasher()
            hasher.combine(target.key)
            let loop = loops[Int(UInt(bitPattern: hasher.finalize()) % UInt(loops.count))]
            self.proxy.call(
                host: address.host, port: address.port, request: headers, body: body, timeout: timeout, on: loop
            )
            .hop(to: self.loop)
            .assumeIsolated()
            .whenComplete { result in
                let outcome: ProbeOutcome
                switch result {
                case .success(let call): outcome = ProbeOutcome(call, kind: target.kind, address: address)
                case .failure(let error): outcome = ProbeOutcome(failure: "\(error)")
                }
                self.record(target, outcome)
                self.state.value!.schedule.finished(target, now: .now())
            }
        }
    }

    /// The latest results of every target, for the status page's probe matrix.
    public func snapshot() async -> [ProbeStatus] {
        let box = self.box
        let hop = self.request.hop
        let region = self.request.region
        let request = self.request
        return
            (try? await self.loop.submit {
                (box.value?.history ?? [:]).values.map { h in
                    var status = ProbeStatus(
                        hop: hop, sourceRegion: region, target: h.target.name, targetRegion: h.target.region,
                        kind: h.target.kind.rawValue, result: h.last.result.rawValue, code: h.last.code,
                        message: h.last.message, lastMilliseconds: h.last.seconds * 1000,
                        successRatio: h.successRatio, p50Milliseconds: h.p50 * 1000, count: h.total)
                    status.address = request.address(for: h.target).description
                    status.targetAddress = h.target.address.description
                    return status
                }
            }.get()) ?? []
    }

    private func record(_ target: ProbeTarget, _ outcome: ProbeOutcome) {
        // A target removed while its probe was in flight: do not bring its series back.
        guard let entry = self.state.value!.schedule.entries[target.key], !entry.retired else { return }
        var history = self.state.value!.history[target.key] ?? ProbeHistory(target: target, last: outcome)
        history.add(outcome)
        self.state.value!.history[target.key] = history
        let series =
            self.state.value!.series[target.key]
            ?? self.metrics.target(name: target.name, targetRegion: target.region, kind: target.kind.rawValue)
        self.state.value!.series[target.key] = series
        series.result(outcome.result.rawValue, code: outcome.code).increment()
        series.up.set(outcome.result == .success ? 1 : 0)
        if outcome.result == .success { series.duration.observe(outcome.seconds) }
        let state = self.state.value!
        if state.lastResult[target.key] != outcome.result {
            state.lastResult[target.key] = outcome.result
            let level: Logger.Level = outcome.result == .success ? .info : .warning
            self.logger.log(
                level: level, "probe result changed",
                metadata: [
                    "target": "\(target.name)", "target_region": "\(target.region)", "kind": "\(target.kind.rawValue)",
                    "target_address": "\(target.address)", "address": "\(self.request.address(for: target))",
                    "result": "\(outcome.result.rawValue)", "code": "\(outcome.code)", "message": "\(outcome.message)",
                ])
        }
    }
}
