import NIOCore

extension H2Session {
    /// Writes everything the session has to send to the channel, with one flush; returns
    /// whether the session is still alive (a send error counts as dead).
    func write(to context: ChannelHandlerContext) -> Bool {
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
