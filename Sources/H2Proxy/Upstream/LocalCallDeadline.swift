import NIOCore

/// One timer for the calls of a ``LocalCallBatch`` that share a timeout: they start together,
/// so they share a deadline too.
///
/// A timer per call cost every probe a scheduled task and its cancellation on the loop's
/// task queue (a closure, a `Scheduled` promise, a heap insertion and a linear search to
/// remove it: about 6 % of a prober's CPU with 1,000 targets). Here a tick's calls cost one.
///
/// Ownership: the pending timer holds the deadline, and the deadline holds its calls until
/// they have all ended (then it cancels the timer and lets them go) or the deadline passes
/// (then it ends those still running as timed out). A call refers back to its deadline weakly,
/// so nothing here forms a cycle, and memory is bounded by the calls in flight: a deadline
/// lives while one of its calls is running.
final class LocalCallDeadline {
    private var calls: [LocalCall]
    private var running: Int
    private var timer: Scheduled<Void>?

    init(calls: [LocalCall]) {
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

    /// A call of this deadline ended (once per call, whatever ended it).
    func callEnded() {
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
        let calls = self.calls
        self.calls = []
        for call in calls { call.deadlinePassed() }
        loop.flushDirty()
    }
}
