import H2Proxy
import Logging
import Metrics
import NIOCore

/// The targets whose probes run on one event loop: their schedule, prepared requests and results.
///
/// Everything here lives on `loop`. A tick starts that loop's due probes on its own pools
/// (shared with the live traffic of the loop) in one batch, written once per connection, and
/// each result is recorded on the same loop, so a probe never hops between threads.
final class ProbeShard: Sendable {
    let loop: EventLoop
    let proxy: ProxyServer
    let request: ProbeRequest
    let metrics: ProbeMetrics
    let logger: Logger
    private let box: NIOLoopBoundBox<State?>

    /// One target's request, built once, and its results so far.
    final class Slot {
        let target: ProbeTarget
        /// The target's id in the schedule (``ProbeSchedule/entries``).
        let id: Int
        let key: String
        let address: HostPort
        let headers: HeaderBlock
        let body: ProbeRequest.BodyTemplate
        let timeout: TimeAmount
        var history: ProbeHistory?
        var lastResult: ProbeResult?
        var series: ProbeMetrics.TargetSeries?
        /// The `insight_probe_total` counter of the last result and code, reused while they repeat.
        var resultCounter: (result: ProbeResult, code: String, counter: Counter)?

        init(target: ProbeTarget, id: Int, key: String, request: ProbeRequest) {
            self.target = target
            self.id = id
            self.key = key
            self.address = request.address(for: target)
            self.timeout = target.timeout ?? request.config.timeout
            self.headers = request.headers(for: target, timeout: self.timeout)
            self.body = request.bodyTemplate(for: target)
        }
    }

    final class State {
        var schedule: ProbeSchedule
        /// By the schedule's id of their target.
        var slots: [Int: Slot] = [:]
        /// The timer ``ProbeSchedule/armTimer(now:)`` asked for, while it is pending.
        var timer: Scheduled<Void>?
        /// Between ``start()`` and ``stop()``: only then is a timer set.
        var running = false
        init(schedule: ProbeSchedule) { self.schedule = schedule }
    }

    /// `maxConcurrency`: this shard's share of `probes.max_concurrency`.
    init(
        loop: EventLoop, proxy: ProxyServer, request: ProbeRequest, maxConcurrency: Int, metrics: ProbeMetrics,
        logger: Logger
    ) {
        self.loop = loop
        self.proxy = proxy
        self.request = request
        self.metrics = metrics
        self.logger = logger
        let schedule = ProbeSchedule(
            defaultInterval: request.config.interval, maxConcurrency: maxConcurrency, coalescing: Prober.coalescing)
        // Created empty here (any thread), filled on the loop before anything else runs there.
        self.box = NIOLoopBoundBox.makeEmptyBox(valueType: State.self, eventLoop: loop)
        let box = self.box
        loop.execute { box.value = State(schedule: schedule) }
    }

    func start() {
        self.loop.execute {
            let state = self.box.value!
            state.running = true
            self.armTimer(state)
        }
    }

    func stop() {
        self.loop.execute {
            let state = self.box.value!
            state.running = false
            state.timer?.cancel()
            state.timer = nil
            state.schedule.timerCancelled()
        }
    }

    /// Sets the timer the schedule asks for after an event (none when the one set is soon enough).
    private func armTimer(_ state: State, now: NIODeadline = .now()) {
        guard state.running, let timer = state.schedule.armTimer(now: now) else { return }
        state.timer?.cancel()
        state.timer = self.loop.scheduleTask(deadline: timer.deadline) {
            self.timerFired(generation: timer.generation)
        }
    }

    private func timerFired(generation: UInt64) {
        let state = self.box.value!
        let now = NIODeadline.now()
        guard state.running, let due = state.schedule.timerFired(generation: generation, now: now) else { return }
        state.timer = nil
        self.startProbes(due, state)
        self.armTimer(state)
    }

    /// Replaces this shard's targets (keyed by ``ProbeTarget/key``). The series of removed
    /// targets whose labels are in `goneSeries` (no target has them any more) leave `/metrics`.
    func setTargets(_ targets: [String: ProbeTarget], goneSeries: Set<ProbeTarget.SeriesLabels>) {
        self.loop.execute {
            let state = self.box.value!
            state.schedule.update(targets: Array(targets.values), now: .now())
            for (id, slot) in state.slots where targets[slot.key] == nil {
                state.slots.removeValue(forKey: id)
                if goneSeries.contains(slot.target.seriesLabels) {
                    self.metrics.removeTarget(
                        name: slot.target.name, targetRegion: slot.target.region, kind: slot.target.kind.rawValue)
                }
            }
            for (key, target) in targets {
                // The schedule gave every one of `targets` an id (a new one, or the one it had).
                let id = state.schedule.ids[key]!
                let old = state.slots[id]
                guard old?.target != target else { continue }
                let slot = Slot(target: target, id: id, key: key, request: self.request)
                if let old {
                    // Same key, new settings (interval, timeout, authority…): keep what was measured.
                    slot.history = old.history
                    slot.history?.target = target
                    slot.lastResult = old.lastResult
                    if old.target.seriesLabels == target.seriesLabels {
                        slot.series = old.series
                        slot.resultCounter = old.resultCounter
                    }
                }
                state.slots[id] = slot
            }
            self.armTimer(state)
        }
    }

    /// The latest results of this shard's targets, for the status page.
    func histories() -> EventLoopFuture<[ProbeHistory]> {
        let box = self.box
        return self.loop.submit {
            guard let state = box.value else { return [] }
            return state.slots.values.compactMap(\.history)
        }
    }

    /// Starts the probes of the targets with ids `due`, in one batch.
    private func startProbes(_ due: [Int], _ state: State) {
        guard !due.isEmpty else { return }
        var batch = LocalCallBatch()
        batch.calls.reserveCapacity(due.count)
        var slots: [Slot] = []
        slots.reserveCapacity(due.count)
        for id in due {
            guard let slot = state.slots[id] else {
                state.schedule.finished(id: id, now: .now())
                continue
            }
            slots.append(slot)
            batch.calls.append(
                LocalCallBatch.Call(
                    host: slot.address.host, port: slot.address.port, request: slot.headers,
                    body: slot.body.body(), timeout: slot.timeout))
        }
        // One handler for the batch, told each call's index: no promise and callback per probe.
        let started = self.proxy.call(batch, onCurrentLoop: self.loop) { index, result in
            self.finished(slots[index], result)
        }
        if !started {
            for slot in slots {
                self.finished(slot, ProbeOutcome(failure: "event loop \(self.loop) is not one of the proxy's"))
            }
        }
    }

    private func finished(_ probed: Slot, _ call: LocalCallResult) {
        self.finished(probed, ProbeOutcome(call, kind: probed.target.kind, address: probed.address))
    }

    private func finished(_ probed: Slot, _ outcome: @autoclosure () -> ProbeOutcome) {
        let state = self.box.value!
        // A target removed while its probe was in flight has no slot: do not bring its series back.
        // One whose settings changed has a new slot: the result goes there. After stop() the
        // sidecar is shutting down and ends the probes still in flight itself: their outcome
        // says nothing about the target (and logged a changed result per target).
        if state.running, let slot = state.slots[probed.id] {
            self.record(slot, outcome())
        }
        let now = NIODeadline.now()
        state.schedule.finished(id: probed.id, now: now)
        self.armTimer(state, now: now)
    }

    /// Counts `outcome`, logs a change of result, and keeps it as the target's last (moved
    /// there, not copied: a copy retained each of its strings and arrays).
    private func record(_ slot: Slot, _ outcome: consuming ProbeOutcome) {
        let series =
            slot.series
            ?? self.metrics.target(
                name: slot.target.name, targetRegion: slot.target.region, kind: slot.target.kind.rawValue)
        slot.series = series
        let result = outcome.result
        if let cached = slot.resultCounter, cached.result == result, cached.code == outcome.code {
            cached.counter.increment()
        } else {
            let counter = series.result(result.rawValue, code: outcome.code)
            slot.resultCounter = (result, outcome.code, counter)
            counter.increment()
        }
        series.up.set(result == .success ? 1 : 0)
        if result == .success { series.duration.observe(outcome.seconds) }
        if slot.lastResult != result {
            slot.lastResult = result
            let target = slot.target
            let level: Logger.Level = result == .success ? .info : .warning
            self.logger.log(
                level: level, "probe result changed",
                metadata: [
                    "target": "\(target.name)", "target_region": "\(target.region)", "kind": "\(target.kind.rawValue)",
                    "target_address": "\(target.address)", "address": "\(slot.address)",
                    "result": "\(result.rawValue)", "code": "\(outcome.code)", "message": "\(outcome.message)",
                ])
        }
        if slot.history == nil {
            slot.history = ProbeHistory(target: slot.target, last: outcome)
        } else {
            slot.history!.add(outcome)
        }
    }
}
