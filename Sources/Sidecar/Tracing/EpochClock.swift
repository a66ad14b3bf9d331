import NIOCore

/// Maps the monotonic instants the proxy measures onto the wall clock once per span, so that
/// span start and end are the sidecar's own measurements, not the time a call was made.
struct EpochClock {
    /// Wall-clock nanoseconds minus monotonic nanoseconds, read once from the loop's
    /// ``StreamClock``.
    let offset: Int64

    init(offsetNanos: Int64) {
        self.offset = offsetNanos
    }

    /// Nanoseconds since the Unix epoch.
    func nanos(_ t: NIODeadline) -> UInt64 {
        UInt64(max(0, Int64(bitPattern: t.uptimeNanoseconds) &+ self.offset))
    }
}
