import NIOCore

extension ProxyServer {
    /// Keeps, on every loop, the connection pools of `addresses` and retires the others that
    /// ``call(host:port:request:body:timeout:on:)`` made: for probe targets discovery dropped.
    /// A retired pool's connections close (GOAWAY) once their streams are done. The upstream's
    /// own pool is always kept.
    @discardableResult
    public func retainPools(for addresses: [(host: String, port: Int)]) -> EventLoopFuture<Void> {
        let keys = Set(addresses.map { ProxyLoop.poolKey(host: $0.host, port: $0.port) })
        let done = self.loops.map { bound in
            bound.eventLoop.submit { bound.value.retainPools(keys) }
        }
        return EventLoopFuture.andAllSucceed(done, on: self.group.any())
    }
}
