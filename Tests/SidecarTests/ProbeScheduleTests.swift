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
        #expect(s.entries[targets[0].key]?.nextDue == self.t0 + .seconds(1))
        #expect(s.entries[targets[0].key]?.inFlight == false)
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

    /// Seeds 1...300 of random interleavings of target updates, ticks and finished probes
    /// (replay one with `INSIGHT_TEST_SEED=N swift test --filter ProbeScheduleTests`). Each
    /// tick must start exactly what a scan of all entries would (waiting, due, oldest first,
    /// ties by key, within the cap), and after every step each waiting target must have its
    /// record in the heap, so none is ever lost.
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
                    let inFlight = s.entries.filter { $0.value.inFlight }.map(\.key)
                    let key = inFlight.randomElement(using: &rng) ?? "unknown"
                    s.finished(key: Bool.random(using: &rng) ? key : pool.randomElement(using: &rng)!.key, now: now)
                default:
                    now = now + .milliseconds(Int64.random(in: 0...60, using: &rng))
                    let expected = s.entries
                        .filter { !$0.value.inFlight && !$0.value.retired && $0.value.nextDue <= now }
                        .sorted { ($0.value.nextDue, $0.key) < ($1.value.nextDue, $1.key) }
                        .prefix(max(0, s.maxConcurrency - s.inFlight)).map(\.key)
                    #expect(s.dueKeys(now: now) == Array(expected), "\(context)")
                }
                #expect(s.inFlight == s.entries.values.filter(\.inFlight).count, "\(context)")
                #expect(s.inFlight <= s.maxConcurrency, "\(context)")
                let records = Set(s.waiting.records.map { "\($0.key)@\($0.due.uptimeNanoseconds)" })
                for (key, e) in s.entries where !e.inFlight && !e.retired {
                    #expect(records.contains("\(key)@\(e.nextDue.uptimeNanoseconds)"), "\(context): \(key) lost")
                }
            }
        }
    }

    @Test func dueHeapGivesRecordsInDueOrderThenKeyOrder() {
        var rng = SeededRandom(seed: 7)
        var heap = ProbeDueHeap()
        var all: [ProbeDueHeap.Record] = []
        for i in 0..<200 {
            let r = ProbeDueHeap.Record(
                due: self.t0 + .milliseconds(Int64.random(in: 0..<50, using: &rng)), key: "k\(i % 37)")
            all.append(r)
            heap.push(r)
        }
        var out: [ProbeDueHeap.Record] = []
        while heap.count > 0 { out.append(heap.removeFirst()) }
        let sorted = all.sorted(by: ProbeDueHeap.Record.before)
        #expect(out.map(\.due) == sorted.map(\.due))
        #expect(out.map(\.key) == sorted.map(\.key))
        heap.rebuild(all)
        #expect(heap.first?.due == sorted.first?.due && heap.first?.key == sorted.first?.key)
    }
}
