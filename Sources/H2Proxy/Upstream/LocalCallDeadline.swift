import NIOCore

/// One timer for the calls of a ``LocalCallBatch`` that share a timeout: they start together,
/// so they share a deadline too.
///
/// A timer per call cost every probe a scheduled task and its cancellation on the loop's
/// task queue (a closure, a `Scheduled` promise, a heap insertion and a linear search to
/// remove it: about 6 % of a prober's CPU with 1,000 targets). Here a tick's calls cost one.
///
/// Ownership: the pending timer holds the deadline, and the deadline holds its calls while
/// they run. A call that ends leaves its slot (an ended call is not kept for the others: a
/// tick's answered probes would otherwise wait for its slowest one, up to the timeout); when the
/// last has ended the timer is cancelled, and when the deadline passes the calls still running
/// end as timed out. A call refers back to its deadline weakly, so nothing here forms a cycle,
/// and what is held is the calls in flight plus a slot array per deadline with one running.
final class LocalCallDeadline {
    /// The calls by slot; nil once a call has ended.
    private var calls: [LocalCall?]
    private var running: Int
    private var timer: Scheduled<Void>?

    init(calls: [LocalCall?]) {
        self.calls = calls
        self.running = calls.count
    }

    /// Starts the timer: the calls still running after `timeout` end as timed out.
    func arm(on loop: ProxyLoop, in timeout: TimeAmount) {
        guard self.running > 0 else { return }
        self.timer = loop.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            self.passed(loop)
        }
    }

    /// Sends every call (after ``arm(on:in:)``: a call that ends at once, with no connection
    /// to be had, finds the timer armed and, the last to end, cancels it).
    func startCalls() {
        for (slot, call) in self.calls.enumerated() { call?.start(deadline: self, slot: slot) }
    }

    /// The call in `slot` ended (once per call, whatever ended it).
    func callEnded(slot: Int) {
        // Every slot is in range until the last call has ended (then the array is emptied).
        if slot < self.calls.count { self.calls[slot] = nil }
        self.running -= 1
        guard self.running == 0 else { return }
        self.timer?.cancel()
        self.timer = nil
        self.calls = []
    }

    /// The number of calls still running (for tests).
    var callsRunning: Int { self.running }

    private func passed(_ loop: ProxyLoop) {
        self.timer = nil
        // A copy: each call that ends here empties its slot.
        for call in self.calls { call?.deadlinePassed() }
        self.calls = []
        loop.flushDirty()
    }
}
