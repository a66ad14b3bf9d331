import NIOCore
import Tracing

/// Maps the monotonic instants the proxy measures onto the wall clock once per span, so that
/// span start and end are the sidecar's own measurements, not the time a call was made.
struct EpochClock {
    /// Wall-clock nanoseconds minus monotonic nanoseconds, read once from the loop's
    /// ``StreamClock``.
    let offset: Int64

    init(offsetNanos: Int64) {
        self.offset = offsetNanos
    }

    func instant(_ t: NIODeadline) -> DefaultTracerClock.Timestamp {
        let ns = Int64(bitPattern: t.uptimeNanoseconds) &+ self.offset
        return DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: UInt64(max(0, ns)))
    }
}
