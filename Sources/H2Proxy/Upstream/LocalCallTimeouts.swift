import NIOCore

/// The timeouts of one event loop's local calls (probes), served by one timer.
///
/// A timer of its own per call cost each probe a `scheduleTask` and a `cancel` (three
/// allocations, and the event loop's scheduled-task lock and heap twice). Here a call is
/// appended to the queue of its timeout amount: calls with the same timeout start in order on
/// a loop, so each queue is already in deadline order and needs no heap. A call that ended
/// stays queued until its deadline passes (nothing is removed from the middle); the owner
/// then finds it ended and drops it. The loop's one timer fires at the earliest deadline plus
/// ``slack`` and takes every call due by then, so the calls of one probe tick share a firing:
/// a call times out at most ``slack`` late, never early.
///
/// Its owner sweeps ended calls out (``removeAll(where:)``) when the queue has doubled since the
/// last sweep (``ProxyLoop/addTimeout(_:now:timeout:)``), so the queue holds at most twice the
/// calls in flight plus 1,024, however long the timeouts; distinct timeout amounts are few (one
/// per configured probe timeout).
struct LocalCallTimeouts<Call> {
    /// How late a call may time out so that calls due close together share one firing.
    static var slack: TimeAmount { .milliseconds(10) }

    private var queues: [(timeout: TimeAmount, entries: CircularBuffer<(deadline: NIODeadline, call: Call)>)] = []
    /// Calls queued now, ended ones included.
    private(set) var count = 0

    var isEmpty: Bool { self.count == 0 }

    /// Queues `call`, due at `now + timeout`. A deadline earlier than the last one of its queue
    /// (a clock that stepped back) is taken as that one: late, never early, and the queue stays
    /// in order.
    mutating func add(_ call: Call, now: NIODeadline, timeout: TimeAmount) {
        var deadline = now + timeout
        if let q = self.queues.firstIndex(where: { $0.timeout == timeout }) {
            if let last = self.queues[q].entries.last?.deadline, last > deadline { deadline = last }
            self.queues[q].entries.append((deadline, call))
        } else {
            var entries = CircularBuffer<(deadline: NIODeadline, call: Call)>(initialCapacity: 16)
            entries.append((deadline, call))
            self.queues.append((timeout, entries))
        }
        self.count += 1
    }

    /// Takes every call matching `shouldRemove` out (ended calls, so that they do not wait
    /// for their deadline in the queue), keeping the order of the rest.
    mutating func removeAll(where shouldRemove: (Call) -> Bool) {
        var q = 0
        while q < self.queues.count {
            let before = self.queues[q].entries.count
            var kept = CircularBuffer<(deadline: NIODeadline, call: Call)>(initialCapacity: 16)
            for entry in self.queues[q].entries where !shouldRemove(entry.call) { kept.append(entry) }
            self.count -= before - kept.count
            if kept.isEmpty {
                self.queues.remove(at: q)
            } else {
                self.queues[q].entries = kept
                q += 1
            }
        }
    }

    /// When the timer should fire: the earliest deadline plus ``slack``; `nil` when empty.
    var nextFiring: NIODeadline? {
        var earliest: NIODeadline?
        for q in self.queues {
            if let head = q.entries.first?.deadline, earliest.map({ head < $0 }) ?? true { earliest = head }
        }
        return earliest.map { $0 + Self.slack }
    }

    /// Takes every call due at or before `now` out of the queues (earliest first within each
    /// queue). Returned rather than handed to a closure: ending a call runs its caller's
    /// callbacks, which may start (and queue) another call.
    mutating func removeDue(now: NIODeadline) -> [Call] {
        var due: [Call] = []
        var q = 0
        while q < self.queues.count {
            while let head = self.queues[q].entries.first, head.deadline <= now {
                self.queues[q].entries.removeFirst()
                self.count -= 1
                due.append(head.call)
            }
            if self.queues[q].entries.isEmpty {
                self.queues.remove(at: q)
            } else {
                q += 1
            }
        }
        return due
    }
}
