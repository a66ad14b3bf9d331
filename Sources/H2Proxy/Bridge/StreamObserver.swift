import NIOCore

/// Sees one proxied stream's events, each with the monotonic time it happened.
///
/// The proxy core knows nothing about timing headers or metrics: those are observers. All
/// calls happen on the stream's event loop, in order; an observer may change the request
/// headers before they go upstream and add trailers before they go downstream. Every time
/// passed in comes from the loop's ``StreamClock`` (its methods say what each one means);
/// an observer that needs another reading takes it from the same clock.
public protocol StreamObserver: AnyObject {
    /// Request headers received from downstream (``StreamClock/requestReceived()``), about to
    /// be sent upstream.
    func requestHeadersWillForward(_ headers: inout HeaderBlock, receivedAt: NIODeadline)
    /// Request HEADERS were serialised by the upstream session, in the flush that writes them
    /// (``StreamClock/requestSent()``); once per attempt.
    func requestHeadersSent(at: NIODeadline)
    /// Response headers (final, not 1xx) arrived from upstream (``StreamClock/firstByte()``)
    /// and are about to go downstream.
    /// May add or change fields. Not called for a Trailers-Only response (see `trailersWillForward`).
    func responseHeadersWillForward(_ headers: inout HeaderBlock, at: NIODeadline)
    /// A DATA chunk was received; `messages` counts gRPC messages completed inside it. `at` is
    /// ``StreamClock/dataReceived()`` if ``wantsDataTimes``, else the time the request was received.
    func dataReceived(_ direction: StreamDirection, bytes: Int, messages: Int, at: NIODeadline)
    /// Whether ``dataReceived(_:bytes:messages:at:)`` needs the chunk's own time: when false,
    /// the stream reads no clock per DATA chunk. Read once, as the stream starts (default: true).
    var wantsDataTimes: Bool { get }
    /// The response's last frame arrived from upstream (`receivedAt`: ``StreamClock/responseEnd()``,
    /// or ``StreamClock/firstByte()`` for a Trailers-Only response, whose single HEADERS block
    /// `trailers` is); `trailers` is about to go downstream. May add fields.
    func trailersWillForward(_ trailers: inout HeaderBlock, trailersOnly: Bool, receivedAt: NIODeadline)
    /// The stream is over on both sides (``StreamClock/streamEnded()``).
    func streamEnded(_ reason: StreamEndReason, at: NIODeadline)
    /// What the observer measured, for calls the sidecar makes itself (default: nothing).
    var measurements: StreamMeasurements? { get }
}

extension StreamObserver {
    /// Every chunk's time is read, unless the observer says it ignores it.
    public var wantsDataTimes: Bool { true }
    /// What the observer measured, handed to the maker of a ``LocalCall`` with its result.
    public var measurements: StreamMeasurements? { nil }
}
