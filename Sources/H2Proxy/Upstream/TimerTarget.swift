/// A scheduled task's way back to the object that scheduled it, neither keeping that object
/// alive nor referencing it weakly.
///
/// A `weak` reference gives its object a side table for good, and every retain and release of
/// the object then takes the runtime's slow path: for upstream connections and pools that was
/// about 4 % of the sidecar's CPU under small-request load. A plain `unowned` capture is not
/// enough either: the owner cancels its timers in `deinit`, but NIO runs the timers that are due
/// in batches, and cancelling one already in the running batch does not stop it. The owner marks
/// its target gone in `deinit` (on its event loop, before its memory is freed), and the task
/// finds `nil`.
///
/// The target may well die first (an upstream connection closing, a retired probe pool): that is
/// the case this type exists for. It is sound because the task holds this object strongly, only
/// ever reads `target` after checking `gone`, and both the owner's last release and the task run
/// on the owner's event loop: connections and pools are confined to their loop (NIO removes a
/// closed channel's handlers, and with them the last reference to the connection, in a task on
/// that loop); at server shutdown NIO fails a stopping loop's scheduled tasks instead of running
/// them.
final class TimerTarget<Target: AnyObject> {
    private unowned(unsafe) let target: Target
    private var gone = false

    init(_ target: Target) {
        self.target = target
    }

    /// The target, or `nil` once its `deinit` called ``targetGone()``.
    var current: Target? { self.gone ? nil : self.target }

    /// Called by the target's `deinit`.
    func targetGone() {
        self.gone = true
    }
}
