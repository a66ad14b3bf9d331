import NIOCore

/// When each target is probed next: a pure state machine, driven by ``Prober``.
///
/// Targets are spread evenly over their interval (the i-th of n starts at i/n of it) with a
/// little jitter, a target never has two probes in flight, and no more than
/// `maxConcurrency` probes run at once. A probe that overruns its slot is started again one
/// interval after it was due, not back to back.
struct ProbeSchedule {
    struct Entry {
        var target: ProbeTarget
        var nextDue: NIODeadline
        var inFlight = false
        /// Removed while in flight: forget it once the probe finishes.
        var retired = false
    }

    let defaultInterval: TimeAmount
    let maxConcurrency: Int
    /// Jitter as a fraction of the gap between two targets' slots, in [0, 1).
    var jitter: () -> Double
    private(set) var entries: [String: Entry] = [:]
    private(set) var inFlight = 0

    init(
        defaultInterval: TimeAmount, maxConcurrency: Int,
        jitter: @escaping () -> Double = { Double.random(in: 0..<0.5) }
    ) {
        self.defaultInterval = defaultInterval
        self.maxConcurrency = maxConcurrency
        self.jitter = jitter
    }

    func interval(of target: ProbeTarget) -> TimeAmount { target.interval ?? self.defaultInterval }

    /// Replaces the target set: new targets get slots spread over their interval, targets
    /// that stay keep their schedule, removed ones stop (after a probe in flight finishes).
    mutating func update(targets: [ProbeTarget], now: NIODeadline) {
        let sorted = targets.sorted { $0.key < $1.key }
        let keys = Set(sorted.map(\.key))
        for (key, entry) in self.entries where !keys.contains(key) {
            if entry.inFlight {
                self.entries[key]?.retired = true
            } else {
                self.entries.removeValue(forKey: key)
            }
        }
        let n = max(sorted.count, 1)
        for (i, target) in sorted.enumerated() {
            if var existing = self.entries[target.key] {
                existing.target = target
                existing.retired = false
                self.entries[target.key] = existing
                continue
            }
            let interval = self.interval(of: target).nanoseconds
            let slot = interval / Int64(n)
            let offset = slot * Int64(i) + Int64(Double(slot) * self.jitter())
            self.entries[target.key] = Entry(target: target, nextDue: now + .nanoseconds(offset))
        }
    }

    /// Targets to probe now (marked in flight), oldest due first, within the concurrency cap.
    mutating func due(now: NIODeadline) -> [ProbeTarget] {
        guard self.inFlight < self.maxConcurrency else { return [] }
        var ready = self.entries.values.filter { !$0.inFlight && !$0.retired && $0.nextDue <= now }
        guard !ready.isEmpty else { return [] }
        ready.sort { $0.nextDue < $1.nextDue }
        var out: [ProbeTarget] = []
        for entry in ready.prefix(self.maxConcurrency - self.inFlight) {
            self.entries[entry.target.key]?.inFlight = true
            self.inFlight += 1
            out.append(entry.target)
        }
        return out
    }

    /// A probe of `target` finished; its next slot is one interval after this one.
    mutating func finished(_ target: ProbeTarget, now: NIODeadline) {
        guard var entry = self.entries[target.key], entry.inFlight else { return }
        self.inFlight -= 1
        if entry.retired {
            self.entries.removeValue(forKey: target.key)
            return
        }
        entry.inFlight = false
        let interval = self.interval(of: entry.target)
        entry.nextDue = entry.nextDue + interval
        if entry.nextDue <= now { entry.nextDue = now + interval }
        self.entries[target.key] = entry
    }

    /// The earliest time something may become due (for the driver's timer).
    var nextDeadline: NIODeadline? {
        self.entries.values.filter { !$0.inFlight && !$0.retired }.map(\.nextDue).min()
    }
}
