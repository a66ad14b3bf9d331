import NIOCore

/// A connection whose nghttp2 session may have frames to write: a ``DownstreamConnection`` or
/// an ``UpstreamConnection``. The back-pressure both sides share lives here, once.
protocol H2Connection: AnyObject {
    var isDirty: Bool { get set }
    var session: H2Session { get }
    var loop: ProxyLoop { get }
    /// Writes what the session has, then reacts to the events that writing produced.
    func flushNow()
}

/// DATA written per flush: NIO's default high watermark, so that the channel turns unwritable
/// (and DATA is held back) as soon as the socket stops taking it.
let dataPerFlush = 64 << 10

extension H2Connection {
    /// The peer's socket filled up or drained: hold DATA back meanwhile (nothing is reported
    /// written, so the other side of the proxy gets no window back), and write again once it
    /// drains.
    func followWritability(of channel: Channel) {
        self.session.setDataPaused(!channel.isWritable)
        if channel.isWritable {
            self.loop.markDirty(self)
            self.loop.flushDirty()
        }
    }

    /// Writes the session's frames to `context`, and asks for another round if DATA is left
    /// that the socket may still take. Returns whether the session is alive, and whether frames
    /// outside flow control now hold more than `max_queued_control_bytes` for a peer that does
    /// not read.
    func writeSession(to context: ChannelHandlerContext) -> (alive: Bool, overControlCap: Bool) {
        let alive = self.session.write(to: context, highWatermark: dataPerFlush)
        if self.session.isHoldingDataForBudget && !self.session.dataPaused { self.loop.markDirty(self) }
        let over = self.session.controlBytesWhilePaused > self.loop.configuration.maxQueuedControlBytes
        return (alive, over)
    }

    /// Ends the connection with GOAWAY ENHANCE_YOUR_CALM because its peer stopped reading:
    /// counted; DATA stays held back, only the GOAWAY goes out, then the channel closes.
    func endForNotReading(context: ChannelHandlerContext) {
        self.loop.metrics.limitQueuedControlBytes.increment()
        self.session.terminate(errorCode: H2ErrorCode.enhanceYourCalm)
        _ = self.session.write(to: context, highWatermark: dataPerFlush)
        context.close(promise: nil)
    }
}
