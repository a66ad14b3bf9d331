import NIOCore
import NIOPosix
import Testing

@testable import Sidecar

@Suite struct ProbeScheduleTests {
    func target(_ i: Int, interval: TimeAmount? = nil) -> ProbeTarget {
        var t = ProbeTarget(
            name: "t\(i)", address: HostPort(host: "127.0.0.1", port: 1000 + i), region: "a", kind: .health)
        t.interval = interval
        return t
    }

    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func targetsAreSpreadEvenlyOverTheInterval() {
        var s = ProbeSchedule(defaultInterval: .seconds(1), maxConcurrency: 100, jitter: { 0 })
        s.update(targets: (0..<10).map { self.target($0) }, now: self.t0)
        var starts: [Int64] = []
        var now = self.t0
        while now < self.t0 + .seconds(1) {
            for _ in s.due(now: now) { starts.append((now - self.t0).nanoseconds / 1_000_000) }
            now = now + .milliseconds(10)
        }
        #expect(starts.count == 10)
        #expect(starts == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900])
    }

    @Test func neverTwoProbesInFlightToOneTarget() {
        var s = ProbeSchedule(defaultInterval: .milliseconds(100), maxConcurrency: 10, jitter: { 0 })
        s.update(targets: [self.target(1)], now: self.t0)
        #expect(s.due(now: self.t0).count == 1)
        // The probe overruns several intervals: nothing new starts meanwhile.
        #expect(s.due(now: self.t0 + .milliseconds(350)).isEmpty)
        s.finished(self.target(1), now: self.t0 + .milliseconds(350))
        #expect(s.due(now: self.t0 + .milliseconds(351)).isEmpty)
        #expect(s.due(now: self.t0 + .milliseconds(450)).count == 1)
    }

    @Test func concurrencyCapHoldsTheRestUntilOthersFinish() {
        var s = ProbeSchedule(defaultInterval: .seconds(1), maxConcurrency: 3, jitter: { 0 })
        let targets = (0..<5).map { self.target($0) }
        s.update(targets: targets, now: self.t0)
        let first = s.due(now: self.t0 + .seconds(1))
        #expect(first.count == 3)
        #expect(s.due(now: self.t0 + .seconds(1)).isEmpty)
        s.finished(first[0], now: self.t0 + .seconds(1))
        #expect(s.due(now: self.t0 + .seconds(1)).count == 1)
        #expect(s.inFlight == 3)
    }

    @Test func removedTargetsStopAndInFlightOnesAreForgottenWhenDone() {
        var s = ProbeSchedule(defaultInterval: .seconds(1), maxConcurrency: 10, jitter: { 0 })
        s.update(targets: [self.target(1), self.target(2)], now: self.t0)
        let running = s.due(now: self.t0 + .seconds(2))
        #expect(running.count == 2)
        s.update(targets: [self.target(2)], now: self.t0 + .seconds(2))
        s.finished(self.target(1), now: self.t0 + .seconds(2))
        #expect(s.entries.count == 1)
        #expect(s.inFlight == 1)
        s.update(targets: [], now: self.t0 + .seconds(2))
        #expect(s.entries.count == 1)
        s.finished(self.target(2), now: self.t0 + .seconds(3))
        #expect(s.entries.isEmpty)
        #expect(s.inFlight == 0)
    }

    @Test func perTargetIntervalAndJitterStayWithinTheSlot() {
        var s = ProbeSchedule(defaultInterval: .seconds(10), maxConcurrency: 10, jitter: { 0.49 })
        s.update(targets: [self.target(1, interval: .milliseconds(200)), self.target(2)], now: self.t0)
        // Two targets cut each one's own interval into two slots; target i starts in slot i,
        // jitter 0.49 of a slot into it: t1 in 0..<100 ms of its 200 ms, t2 in 5..<10 s of 10 s.
        let entries = s.entries.values.sorted { $0.target.name < $1.target.name }
        #expect(entries.map(\.target.name) == ["t1", "t2"])
        #expect(entries.map { ($0.nextDue - self.t0).nanoseconds / 1_000_000 } == [49, 7_450])
        for (i, e) in entries.enumerated() {
            let slot = s.interval(of: e.target).nanoseconds / Int64(entries.count)
            #expect(e.nextDue >= self.t0 + .nanoseconds(slot * Int64(i)))
            #expect(e.nextDue < self.t0 + .nanoseconds(slot * Int64(i + 1)))
        }
    }

    @Test func dueKeysComeOldestFirstAndFinishingByKeyMovesTheSlotOneIntervalOn() {
        var s = ProbeSchedule(defaultInterval: .seconds(1), maxConcurrency: 2, jitter: { 0 })
        let targets = (0..<3).map { self.target($0) }
        s.update(targets: targets, now: self.t0)
        // Slots at 0, 333 and 666 ms; at 700 ms all are due, the cap takes the two oldest.
        let keys = s.dueKeys(now: self.t0 + .milliseconds(700))
        #expect(keys == [targets[0].key, targets[1].key])
        #expect(s.inFlight == 2)
        s.finished(key: targets[0].key, now: self.t0 + .milliseconds(700))
        #expect(s.inFlight == 1)
        let id = s.ids[targets[0].key]!
        #expect(s.entries[id]?.nextDue == self.t0 + .seconds(1))
        #expect(s.entries[id]?.inFlight == false)
        // Finishing a key not in flight (or unknown) changes nothing.
        s.finished(key: targets[0].key, now: self.t0 + .milliseconds(700))
        s.finished(key: "nope", now: self.t0 + .milliseconds(700))
        #expect(s.inFlight == 1)
        #expect(s.dueKeys(now: self.t0 + .milliseconds(700)) == [targets[2].key])
    }

    @Test func maxConcurrencyIsSplitOverTheShardsWithoutLosingAnyOrLeavingOneAtZero() {
        #expect(Prober.concurrencyShares(64, loops: 2) == [32, 32])
        #expect(Prober.concurrencyShares(5, loops: 2) == [3, 2])
        #expect(Prober.concurrencyShares(1, loops: 4) == [1])
        #expect(Prober.concurrencyShares(3, loops: 8) == [1, 1, 1])
        #expect(Prober.concurrencyShares(7, loops: 1) == [7])
    }

    /// Seeds 1...300 of random interleavings of target updates, runs and finished probes
    /// (replay one with `INSIGHT_TEST_SEED=N swift test --filter ProbeScheduleTests`). Each
    /// run must start exactly what a scan of all entries would (waiting, due, oldest first,
    /// ties by id, within the cap), ids and keys must map one to one, and after every step
    /// each waiting target must have its record in the heap, so none is ever lost.
    @Test func randomInterleavingsStartWhatAScanWouldAndLoseNoTarget() {
        final class Jitter {
            var rng: SeededRandom
            init(_ rng: SeededRandom) { self.rng = rng }
        }
        let intervals: [TimeAmount?] = [nil, .milliseconds(100), .milliseconds(250), .milliseconds(40)]
        for seed in SeededRandom.seeds(count: 300) {
            var rng = SeededRandom(seed: seed)
            let jitter = Jitter(SeededRandom(seed: seed &* 31))
            let pool = (0..<12).map { self.target($0, interval: intervals.randomElement(using: &rng)!) }
            var s = ProbeSchedule(
                defaultInterval: .milliseconds(200), maxConcurrency: Int.random(in: 1...5, using: &rng),
                jitter: { Double.random(in: 0..<0.5, using: &jitter.rng) })
            var now = self.t0
            for step in 0..<200 {
                let context = "seed \(seed) step \(step)"
                switch Int.random(in: 0..<10, using: &rng) {
                case 0:
                    var targets = pool.filter { _ in Bool.random(using: &rng) }
                    // Same key, other settings: the schedule keeps its slot.
                    if let i = targets.indices.randomElement(using: &rng) { targets[i].timeout = .milliseconds(5) }
                    s.update(targets: targets, now: now)
                    #expect(s.waiting.count <= 2 * s.entries.count + 64, "\(context)")
                case 1...4:
                    let inFlight = s.entries.filter { $0.value.inFlight }.map(\.value.key)
                    let key = inFlight.randomElement(using: &rng) ?? "unknown"
                    s.finished(key: Bool.random(using: &rng) ? key : pool.randomElement(using: &rng)!.key, now: now)
                default:
                    now = now + .milliseconds(Int64.random(in: 0...60, using: &rng))
                    let expected = s.entries
                        .filter { !$0.value.inFlight && !$0.value.retired && $0.value.nextDue <= now }
                        .sorted { ($0.value.nextDue, $0.key) < ($1.value.nextDue, $1.key) }
                        .prefix(max(0, s.maxConcurrency - s.inFlight)).map(\.key)
                    #expect(s.dueIDs(now: now) == Array(expected), "\(context)")
                }
                #expect(s.ids.count == s.entries.count, "\(context)")
                for (key, id) in s.ids { #expect(s.entries[id]?.key == key, "\(context): \(key)") }
                #expect(s.inFlight == s.entries.values.filter(\.inFlight).count, "\(context)")
                #expect(s.inFlight <= s.maxConcurrency, "\(context)")
                let records = Set(s.waiting.records.map { "\($0.id)@\($0.due.uptimeNanoseconds)" })
                for (key, e) in s.entries where !e.inFlight && !e.retired {
                    #expect(records.contains("\(key)@\(e.nextDue.uptimeNanoseconds)"), "\(context): \(key) lost")
                }
            }
        }
    }

    @Test func theLoopWakesOnlyWhenSomethingIsDueAndRunsAtLeastTheWindowApart() {
        var s = ProbeSchedule(
            defaultInterval: .seconds(1), maxConcurrency: 10, coalescing: .milliseconds(50), jitter: { 0 })
        #expect(s.armTimer(now: self.t0) == nil, "nothing to probe: no timer")
        s.update(targets: (0..<10).map { self.target($0) }, now: self.t0)
        // The first slot is at t0: the first run is then.
        let first = s.armTimer(now: self.t0)
        #expect(first?.deadline == self.t0)
        #expect(s.armTimer(now: self.t0) == nil, "the timer set is soon enough")
        #expect(s.timerFired(generation: first!.generation, now: self.t0)?.count == 1)
        // Slots every 100 ms: the next run is at the next slot, not at the window's end.
        let second = s.armTimer(now: self.t0)
        #expect(second?.deadline == self.t0 + .milliseconds(100))
        #expect(s.timerFired(generation: second!.generation, now: self.t0 + .milliseconds(100))?.count == 1)

        // Slots every 10 ms: those that fall due within 50 ms of a run wait for the window's end.
        var dense = ProbeSchedule(
            defaultInterval: .milliseconds(100), maxConcurrency: 10, coalescing: .milliseconds(50), jitter: { 0 })
        dense.update(targets: (0..<10).map { self.target($0) }, now: self.t0)
        let a = dense.armTimer(now: self.t0)!
        #expect(dense.timerFired(generation: a.generation, now: self.t0) == [dense.ids[self.target(0).key]!])
        let b = dense.armTimer(now: self.t0)!
        #expect(b.deadline == self.t0 + .milliseconds(50))
        #expect(dense.timerFired(generation: b.generation, now: b.deadline)?.count == 5, "slots 10 to 50 ms")
    }

    @Test func aReplacedTimerDoesNothingAndAStoppedShardSetsOneAgain() {
        var s = ProbeSchedule(defaultInterval: .seconds(1), maxConcurrency: 10, jitter: { 0 })
        s.update(targets: [self.target(1)], now: self.t0 + .milliseconds(500))
        let late = s.armTimer(now: self.t0)!
        // A new target due sooner: a new, earlier timer replaces the one set.
        s.update(targets: [self.target(1), self.target(0)], now: self.t0)
        let early = s.armTimer(now: self.t0)!
        #expect(early.deadline < late.deadline && early.generation != late.generation)
        #expect(s.timerFired(generation: late.generation, now: late.deadline) == nil, "replaced: nothing runs")
        #expect(s.timerFired(generation: early.generation, now: early.deadline) != nil)
        let next = s.armTimer(now: early.deadline)!
        s.timerCancelled()
        #expect(s.armTimer(now: early.deadline) == .init(deadline: next.deadline, generation: next.generation + 1))
    }

    @Test func whenTheCapHeldProbesBackAFinishedProbeStartsTheNextAtOnce() {
        var s = ProbeSchedule(
            defaultInterval: .seconds(1), maxConcurrency: 2, coalescing: .milliseconds(50), jitter: { 0 })
        s.update(targets: (0..<4).map { self.target($0) }, now: self.t0 - .seconds(1))
        let t = s.armTimer(now: self.t0)!
        let first = s.timerFired(generation: t.generation, now: self.t0)!
        #expect(first.count == 2)
        #expect(s.armTimer(now: self.t0) == nil, "at the cap: a finished probe sets the timer")
        s.finished(id: first[0], now: self.t0 + .milliseconds(3))
        let next = s.armTimer(now: self.t0 + .milliseconds(3))
        #expect(next?.deadline == self.t0 + .milliseconds(3), "not the window's end")
        #expect(s.timerFired(generation: next!.generation, now: self.t0 + .milliseconds(3))?.count == 1)
    }

    /// Seeds 1...200 of random interleavings of target updates, finished probes and the
    /// passing of time, with the shard's timer: the timer set after each event fires when
    /// its time comes. After every step, when the cap leaves room, a timer is set no later
    /// than each waiting target's due time or the window's end after the last run (at once
    /// if the cap held it back); runs come at least the window apart unless the cap held a
    /// due probe back; and every waiting target starts within the window of its due time
    /// unless the cap is what held it.
    @Test func randomInterleavingsSetTheTimerInTimeAndNoSooner() {
        let window = TimeAmount.milliseconds(30)
        for seed in SeededRandom.seeds(count: 200) {
            var rng = SeededRandom(seed: seed)
            let intervals: [TimeAmount?] = [nil, .milliseconds(100), .milliseconds(40), .milliseconds(300)]
            let pool = (0..<10).map { self.target($0, interval: intervals.randomElement(using: &rng)!) }
            var s = ProbeSchedule(
                defaultInterval: .milliseconds(200), maxConcurrency: Int.random(in: 1...4, using: &rng),
                coalescing: window, jitter: { 0.25 })
            var now = self.t0
            var timer: ProbeSchedule.Timer?
            var capHeld = false
            // The last time the cap was reached (a target due before it may wait longer).
            var capFull: NIODeadline?
            for step in 0..<300 {
                let context = "seed \(seed) step \(step)"
                if s.inFlight == s.maxConcurrency { capFull = now }
                switch Int.random(in: 0..<10, using: &rng) {
                case 0:
                    s.update(targets: pool.filter { _ in Int.random(in: 0..<4, using: &rng) > 0 }, now: now)
                case 1...3:
                    if let id = s.entries.filter({ $0.value.inFlight }).map(\.key).randomElement(using: &rng) {
                        s.finished(id: id, now: now)
                    }
                default:
                    let next = now + .milliseconds(Int64.random(in: 0...25, using: &rng))
                    if let t = timer, t.deadline <= next {
                        now = max(now, t.deadline)
                        let before = s.lastRun
                        let oldestWaiting = s.waiting.firstDue
                        guard let started = s.timerFired(generation: t.generation, now: now) else {
                            Issue.record("\(context): the timer set was stale")
                            break
                        }
                        timer = nil
                        if let before, now < before + window {
                            #expect(capHeld && oldestWaiting.map { $0 <= before } == true, "\(context): ran too soon")
                        }
                        capHeld = s.inFlight == s.maxConcurrency
                        #expect(started.count <= s.maxConcurrency, "\(context)")
                    } else {
                        now = next
                    }
                }
                if let t = s.armTimer(now: now) {
                    if let old = timer { #expect(t.deadline < old.deadline, "\(context): replaced by a later timer") }
                    timer = t
                }
                guard s.inFlight < s.maxConcurrency else { continue }
                let lastRun = s.lastRun
                for (key, e) in s.entries where !e.inFlight && !e.retired {
                    // Past times mean at once: lateness is checked below.
                    let latest: NIODeadline
                    if let lastRun, e.nextDue <= lastRun {
                        latest = now
                    } else {
                        latest = max(now, e.nextDue, lastRun.map { $0 + window } ?? e.nextDue)
                    }
                    #expect(timer != nil && timer!.deadline <= latest, "\(context): \(key) has no timer in time")
                    let heldByCap = capFull.map { $0 >= e.nextDue } ?? false
                    #expect(now <= e.nextDue + window || heldByCap, "\(context): \(key) waits past the window")
                }
            }
        }
    }

    @Test func dueHeapGivesRecordsInDueOrderThenIDOrder() {
        var rng = SeededRandom(seed: 7)
        var heap = ProbeDueHeap()
        var all: [ProbeDueHeap.Record] = []
        for i in 0..<200 {
            let r = ProbeDueHeap.Record(
                due: self.t0 + .milliseconds(Int64.random(in: 0..<50, using: &rng)), id: i % 37)
            all.append(r)
            heap.push(r)
        }
        var out: [ProbeDueHeap.Record] = []
        while heap.count > 0 { out.append(heap.removeFirst()) }
        let sorted = all.sorted(by: ProbeDueHeap.Record.before)
        #expect(out.map(\.due) == sorted.map(\.due))
        #expect(out.map(\.id) == sorted.map(\.id))
        heap.rebuild(all)
        #expect(heap.first?.due == sorted.first?.due && heap.first?.id == sorted.first?.id)
    }
}

/// The tests' view of the schedule by target and key; the shard uses ids only.
extension ProbeSchedule {
    mutating func due(now: NIODeadline) -> [ProbeTarget] {
        self.dueIDs(now: now).map { self.entries[$0]!.target }
    }

    mutating func dueKeys(now: NIODeadline) -> [String] {
        self.dueIDs(now: now).map { self.entries[$0]!.key }
    }

    mutating func finished(_ target: ProbeTarget, now: NIODeadline) {
        self.finished(key: target.key, now: now)
    }

    mutating func finished(key: String, now: NIODeadline) {
        guard let id = self.ids[key] else { return }
        self.finished(id: id, now: now)
    }
}
