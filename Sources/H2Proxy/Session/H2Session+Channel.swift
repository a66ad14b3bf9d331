import NIOCore

extension H2Session {
    /// Writes what the session has to send to the channel, with one flush: every control frame,
    /// and DATA up to `highWatermark` bytes. If more DATA waits (``isHoldingDataForBudget``)
    /// the owner writes again: each round either finds the socket taking it, or turns the
    /// channel unwritable, which holds DATA back until it drains. Returns whether the session
    /// is still alive (a send error counts as dead).
    func write(to context: ChannelHandlerContext, highWatermark: Int) -> Bool {
        self.dataBudget = highWatermark
        var wrote = false
        let alive: Bool
        do {
            alive = try self.produceOutput { buffer in
                wrote = true
                context.write(NIOAny(buffer), promise: nil)
            }
        } catch {
            alive = false
        }
        if wrote { context.flush() }
        return alive
    }
}
