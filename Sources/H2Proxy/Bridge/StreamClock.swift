import Foundation
import NIOCore

/// The one clock every stream measurement reads: what "received", "sent", "first byte" and
/// "end" mean is defined here, once, by the method that takes each timestamp.
///
/// Owned by the ``ProxyLoop`` (one per event loop) and handed to the loop's observer source
/// (``StreamObserverFactory/makeLoopObserverSource(for:clock:shard:)``) and local responder, so a
/// test can drive every timestamp of a stream with ``manual(at:unixMicros:)`` and
/// ``advance(by:)``. Monotonic readings are `NIODeadline.now()` (nanoseconds since an
/// arbitrary start, never going back); wall-clock readings are `CLOCK_REALTIME` in Unix
/// microseconds, only for stamps that travel to other machines. A reading is a function call
/// and a branch: nothing is allocated or locked per stream or frame.
///
/// Every event below is seen on the loop when nghttp2 hands the proxy the frame's event, that
/// is after the loop read and decoded the bytes. Moments read from bytes are stamped with the
/// start of the read that carried them (all frames in one read arrived together), and moments
/// of a flush with its start: one reading per read or flush, not one per stream and moment
/// (``withSharedReading(_:)``). "Sent" is when the upstream session serialised
/// the request HEADERS (nghttp2's `on_frame_send`, in the flush at the end of the loop entry
/// point, ``ProxyLoop/flushDirty()``, right after the frame went to the channel), not when the
/// proxy queued them: the proxy's own write delay counts as its own time. "Forwarded" is when the
/// proxy queues the trailers in the client's session (they carry the measurement, so it is read
/// before they are written).
///
/// Not measurements, and so not read here: the loop's housekeeping tick, connection idle and
/// age limits, upstream wait and drain deadlines, the readiness check's elapsed time and the
/// probe schedule. Those keep reading the event loop's time (`NIODeadline.now()` and scheduled
/// tasks) directly.
public final class StreamClock {
    /// Set for a manual clock: the time it stands at.
    private var manualNow: NIODeadline?
    /// The reading shared by the moments of one upstream read or one flush
    /// (``withSharedReading(_:)``), taken when it began.
    private var sharedReading: NIODeadline?
    private var manualUnixMicros: Int64 = 0

    /// A clock that reads the system's monotonic and wall clocks.
    public init() {}

    /// A clock that stands still at `now` (and at `unixMicros` on the wall clock) until
    /// ``advance(by:)`` moves it. For tests.
    public static func manual(at now: NIODeadline, unixMicros: Int64 = 0) -> StreamClock {
        let clock = StreamClock()
        clock.manualNow = now
        clock.manualUnixMicros = unixMicros
        return clock
    }

    /// Moves a manual clock forward (both its readings); does nothing to a system clock.
    public func advance(by amount: TimeAmount) {
        guard let now = self.manualNow else { return }
        self.manualNow = now + amount
        self.manualUnixMicros += amount.nanoseconds / 1000
    }

    @inline(__always)
    private func now() -> NIODeadline {
        self.manualNow ?? NIODeadline.now()
    }

    /// Runs `body` with one reading of the clock shared by the moments that happen in it and
    /// may share one (``requestSent()``, ``dataReceived()``, ``firstByte()``, ``responseEnd()``,
    /// ``streamEnded()``): taken now, before `body` reads or writes any bytes. Used for one
    /// upstream read (every frame in those bytes arrived when they were read) and for one flush
    /// of the loop's connections (every frame written and every stream that ends in it), so a
    /// stream costs no clock call per moment (six of them, about 20 ns each, were a fifth of what
    /// timing added per request). Nested calls share the outer reading.
    @inline(__always)
    func withSharedReading<Result>(_ body: () throws -> Result) rethrows -> Result {
        guard self.sharedReading == nil else { return try body() }
        self.sharedReading = self.now()
        defer { self.sharedReading = nil }
        return try body()
    }

    @inline(__always)
    private func sharedOrNow() -> NIODeadline {
        self.sharedReading ?? self.now()
    }

    // MARK: The moments of one stream

    /// **Received**: the bytes carrying the request's HEADERS were read from the client's
    /// connection (read once per read, before decoding: every request in one read shares it; for
    /// a call this sidecar makes itself, ``LocalCall``, the moment it starts). Hop durations that begin on the
    /// request side begin here when the request was never sent.
    public func requestReceived() -> NIODeadline { self.now() }

    /// **Sent**: the upstream session serialised the request's HEADERS frame (nghttp2's
    /// `on_frame_send`, reported by ``H2Event/requestHeadersSent(streamID:)`` from the flush
    /// that wrote it), not the moment the proxy submitted them. Read once as that flush begins,
    /// before its bytes reach the socket: read after, a peer on another thread could receive
    /// the HEADERS "before" they were sent, and the segment to it would read below zero. Read again for each retry; the
    /// timing observer keeps the first. This hop's `dur` and `ttfb` count from here, and the
    /// request side of its `self` ends here, so the proxy's own write delay is its own time.
    public func requestSent() -> NIODeadline { self.sharedOrNow() }

    /// A DATA frame arrived, in either direction (from the upstream: when the read that
    /// carried it began).
    public func dataReceived() -> NIODeadline { self.sharedOrNow() }

    /// **First byte**: the response's final (not 1xx) HEADERS arrived from the upstream.
    /// For a Trailers-Only response it is also the response's end. Like every moment read
    /// from upstream bytes, it is when the read that carried them began: all frames in one
    /// read arrived together.
    public func firstByte() -> NIODeadline { self.sharedOrNow() }

    /// **End**: the response's last frame arrived from the upstream (trailers, or DATA with
    /// END_STREAM), when the read that carried it began. This hop's `dur` ends here.
    public func responseEnd() -> NIODeadline { self.sharedOrNow() }

    /// The observer is done with the response's trailers and they are about to be queued to
    /// the client: this hop's own processing of the response ends here (`self` in
    /// `insight-timing`, together with received → sent on the request side).
    public func trailersForwarded() -> NIODeadline { self.now() }

    /// A local responder has built its answer (its own processing time ends here).
    public func localAnswerReady() -> NIODeadline { self.now() }

    /// The stream is over on both sides (both closes seen, or the proxy ended it). A call cut
    /// short is timed until here. A stream that ends in a flush (its last frame written) or a
    /// read shares that flush's or read's reading.
    public func streamEnded() -> NIODeadline { self.sharedOrNow() }

    // MARK: Wall clock

    /// Now, in Unix microseconds (`CLOCK_REALTIME`): for stamps read on other machines
    /// (`insight-hops`, echo probes) and log lines, never for a duration.
    public func unixMicros() -> Int64 {
        self.manualNow == nil ? Self.systemUnixMicros() : self.manualUnixMicros
    }

    /// Unix nanoseconds minus this clock's monotonic nanoseconds, read now: maps the moments
    /// above onto the wall clock (span start and end times) without a wall-clock read each.
    public func wallClockOffsetNanos() -> Int64 {
        self.unixMicros() &* 1000 &- Int64(bitPattern: self.now().uptimeNanoseconds)
    }

    /// The system's wall clock in Unix microseconds, where no loop's clock is at hand.
    public static func systemUnixMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}
