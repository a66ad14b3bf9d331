import NIOCore

/// When each target is probed next, and when the shard's loop must wake to start them: a pure
/// state machine, driven by ``ProbeShard``.
///
/// Targets are spread evenly over their interval (the i-th of n starts at i/n of it) with a
/// little jitter, a target never has two probes in flight, and no more than
/// `maxConcurrency` probes run at once. A probe that overruns its slot is started again one
/// interval after it was due, not back to back.
///
/// The shard's loop wakes for a run only when something is due, and runs at least
/// `coalescing` apart: probes that fall due within that window start together at its end, in
/// one batch. On this class of machine a wake-up of an otherwise idle loop costs about 150 µs
/// of CPU whatever it does, so waking every 20 ms cost 1.7 % of a core with 10 targets and
/// about a third of the prober's CPU with 1,000. A probe therefore starts up to `coalescing`
/// after its slot (its interval is kept: the next slot is one interval after this one). The
/// window is skipped only when the cap held probes back: a finished probe frees a place and
/// the next run comes at once, so the cap, not the window, bounds the rate.
struct ProbeSchedule {
    struct Entry {
        var target: ProbeTarget
        /// ``ProbeTarget/key``, kept to forget the entry's id when it goes.
        let key: String
        var nextDue: NIODeadline
        var inFlight = false
        /// Removed while in flight: forget it once the probe finishes.
        var retired = false
    }

    let defaultInterval: TimeAmount
    let maxConcurrency: Int
    /// The least time between two runs, unless the cap held probes back.
    let coalescing: TimeAmount
    /// Jitter as a fraction of the gap between two targets' slots, in [0, 1).
    var jitter: () -> Double
    /// The targets by id: an integer the schedule gives each target (by ``ProbeTarget/key``)
    /// when it arrives and never gives again, so a run and a finished probe find their entry
    /// by an integer, not by hashing and comparing the target's key (7 % of a prober's CPU).
    private(set) var entries: [Int: Entry] = [:]
    /// The id of each target's key.
    private(set) var ids: [String: Int] = [:]
    private var nextID = 0
    private(set) var inFlight = 0
    /// A record for every entry waiting for its slot (neither in flight nor retired), plus
    /// stale ones (the entry was removed, or started and moved on) that are dropped when they
    /// reach the top or when there are too many of them.
    private(set) var waiting = ProbeDueHeap()
    /// When the last run was (``timerFired(generation:now:)``).
    private(set) var lastRun: NIODeadline?
    /// The run the shard's timer is set for, and that timer's generation: a timer of another
    /// generation (replaced by an earlier one) does nothing when it fires.
    private(set) var armed: Timer?
    private var generations: UInt64 = 0

    /// A timer the shard sets on its loop: at `deadline`, call ``timerFired(generation:now:)``.
    struct Timer: Equatable {
        var deadline: NIODeadline
        var generation: UInt64
    }

    init(
        defaultInterval: TimeAmount, maxConcurrency: Int, coalescing: TimeAmount = .milliseconds(50),
        jitter: @escaping () -> Double = { Double.random(in: 0..<0.5) }
    ) {
        self.defaultInterval = defaultInterval
        self.maxConcurrency = maxConcurrency
        self.coalescing = coalescing
        self.jitter = jitter
    }

    func interval(of target: ProbeTarget) -> TimeAmount { target.interval ?? self.defaultInterval }

    /// Replaces the target set: new targets get slots spread over their interval, targets
    /// that stay keep their schedule, removed ones stop (after a probe in flight finishes).
    mutating func update(targets: [ProbeTarget], now: NIODeadline) {
        let sorted = targets.map { (key: $0.key, target: $0) }.sorted { $0.key < $1.key }
        let keys = Set(sorted.map(\.key))
        for (key, id) in self.ids where !keys.contains(key) {
            if self.entries[id]!.inFlight {
                self.entries[id]!.retired = true
            } else {
                self.entries.removeValue(forKey: id)
                self.ids.removeValue(forKey: key)
            }
        }
        let n = max(sorted.count, 1)
        // New targets get ids in key order: equal due times start in key order among them.
        for (i, (key, target)) in sorted.enumerated() {
            if let id = self.ids[key] {
                self.entries[id]!.target = target
                self.entries[id]!.retired = false
                continue
            }
            let interval = self.interval(of: target).nanoseconds
            let slot = interval / Int64(n)
            let offset = slot * Int64(i) + Int64(Double(slot) * self.jitter())
            let nextDue = now + .nanoseconds(offset)
            let id = self.nextID
            self.nextID += 1
            self.ids[key] = id
            self.entries[id] = Entry(target: target, key: key, nextDue: nextDue)
            self.waiting.push(.init(due: nextDue, id: id))
        }
        // Removed targets leave stale records behind: rebuild before they outnumber the live ones.
        if self.waiting.count > 2 * self.entries.count + 64 {
            self.waiting.rebuild(
                self.entries.compactMap { id, entry in
                    entry.inFlight || entry.retired ? nil : ProbeDueHeap.Record(due: entry.nextDue, id: id)
                })
        }
    }

    /// The ids (``entries``) of the targets to probe now (marked in flight), oldest due first,
    /// within the concurrency cap.
    ///
    /// Reads the waiting targets in order of their due time (ties by id) and stops at the
    /// first not yet due or at the concurrency cap: the cost is the probes started, not the
    /// number of targets.
    mutating func dueIDs(now: NIODeadline) -> [Int] {
        var out: [Int] = []
        while self.inFlight < self.maxConcurrency, let due = self.waiting.firstDue, due <= now {
            let top = self.waiting.removeFirst()
            // A stale record: the target was removed, or this is not its current slot.
            guard let i = self.entries.index(forKey: top.id) else { continue }
            let entry = Self.state(&self.entries.values[i])
            guard !entry.inFlight, !entry.retired, entry.nextDue == top.due else { continue }
            self.entries.values[i].inFlight = true
            self.inFlight += 1
            out.append(top.id)
        }
        return out
    }

    /// A probe of the target with `id` finished; its next slot is one interval after this one.
    mutating func finished(id: Int, now: NIODeadline) {
        // In place by index: no copy of the entry's target per probe.
        guard let i = self.entries.index(forKey: id) else { return }
        let entry = Self.state(&self.entries.values[i])
        guard entry.inFlight else { return }
        self.inFlight -= 1
        if entry.retired {
            let key = self.entries.values[i].key
            self.entries.remove(at: i)
            self.ids.removeValue(forKey: key)
            return
        }
        let interval = entry.interval ?? self.defaultInterval
        self.entries.values[i].inFlight = false
        var next = entry.nextDue + interval
        if next <= now { next = now + interval }
        self.entries.values[i].nextDue = next
        self.waiting.push(.init(due: next, id: id))
    }

    /// An entry's scheduling fields, read in place: given `inout` (the dictionary's `_modify`),
    /// not through its getter, which copied the whole entry and its target's strings (about 40
    /// retains and releases per probe).
    private static func state(_ e: inout Entry) -> (
        inFlight: Bool, retired: Bool, nextDue: NIODeadline, interval: TimeAmount?
    ) {
        (e.inFlight, e.retired, e.nextDue, e.target.interval)
    }

    /// When the next run should be, or nil when none is needed until a probe finishes (nothing
    /// waits, or the cap is reached).
    ///
    /// The earliest waiting record's due time, but not sooner than `coalescing` after the last
    /// run; `now` when a record was already due at the last run (the cap held it back). The
    /// record may be stale (its target removed): the run drops it, a wake-up at most per record.
    func nextRun(now: NIODeadline) -> NIODeadline? {
        guard self.inFlight < self.maxConcurrency, let due = self.waiting.firstDue else { return nil }
        guard let lastRun = self.lastRun else { return due }
        if due <= lastRun { return now }
        return max(due, lastRun + self.coalescing)
    }

    /// The timer to set after any event, or nil when the one set (if any) is soon enough.
    ///
    /// A new timer replaces the one set (the shard cancels it; if it fires anyway, its
    /// generation is stale and it does nothing).
    mutating func armTimer(now: NIODeadline) -> Timer? {
        guard let at = self.nextRun(now: now) else { return nil }
        if let armed = self.armed, armed.deadline <= at { return nil }
        self.generations += 1
        let timer = Timer(deadline: at, generation: self.generations)
        self.armed = timer
        return timer
    }

    /// The shard cancelled its timer (it stopped): the next ``armTimer(now:)`` sets one again.
    mutating func timerCancelled() {
        self.armed = nil
    }

    /// The shard's timer of `generation` fired: the ids of the targets to probe now, as
    /// ``dueIDs(now:)``, or nil when the timer was replaced (nothing to do).
    mutating func timerFired(generation: UInt64, now: NIODeadline) -> [Int]? {
        guard self.armed?.generation == generation else { return nil }
        self.armed = nil
        self.lastRun = now
        return self.dueIDs(now: now)
    }
}
