import NIOCore

/// Local calls started together on one event loop (a probe tick's calls for that loop).
///
/// ``ProxyServer/call(host:port:request:body:timeout:on:)`` costs a task on the loop and a
/// socket write per call; a batch costs one task (none when started from the loop itself) and
/// one write per connection for all of its calls.
public struct LocalCallBatch: Sendable {
    /// One call: where to connect and what to send, as for ``ProxyServer/call(host:port:request:body:timeout:on:)``.
    public struct Call: Sendable {
        public var host: String
        public var port: Int
        public var request: HeaderBlock
        public var body: ByteBuffer
        /// From the call's start to its response's end; the stream is cancelled after it.
        public var timeout: TimeAmount

        public init(host: String, port: Int, request: HeaderBlock, body: ByteBuffer, timeout: TimeAmount) {
            self.host = host
            self.port = port
            self.request = request
            self.body = body
            self.timeout = timeout
        }
    }

    public var calls: [Call]

    public init(_ calls: [Call] = []) { self.calls = calls }

    /// Starts every call on `loop`'s pools, then writes every connection they made dirty once;
    /// `completion` runs once per call, on the loop, with the call's index in the batch.
    ///
    /// Calls with the same timeout share one timer (``LocalCallDeadline``): they start now,
    /// together, so their deadlines are the same.
    func start(on loop: ProxyLoop, completion: @escaping LocalCall.Completion) {
        var started: [LocalCall] = []
        started.reserveCapacity(self.calls.count)
        for (index, call) in self.calls.enumerated() {
            started.append(
                LocalCall(
                    loop: loop, pool: loop.pool(host: call.host, port: call.port), request: call.request,
                    body: call.body, timeout: call.timeout, index: index, completion: completion))
        }
        // One deadline per distinct timeout (a probe tick's calls nearly always have one).
        // Optional from the start: the deadline keeps `[LocalCall?]`, and converting a
        // `[LocalCall]` is a cast through the runtime's generic casting, per batch.
        var groups: [(timeout: TimeAmount, calls: [LocalCall?])] = []
        for call in started {
            let timeout = call.timeout
            if let g = groups.firstIndex(where: { $0.timeout == timeout }) {
                groups[g].calls.append(call)
            } else {
                groups.append((timeout, [call]))
            }
        }
        for group in groups {
            let deadline = LocalCallDeadline(calls: group.calls)
            deadline.arm(on: loop, in: group.timeout)
            deadline.startCalls()
        }
        loop.flushDirty()
    }
}

extension ProxyServer {
    /// Starts every call of `batch` on `eventLoop` (inline when called there), on that loop's
    /// pools, and writes their requests once at the end; the futures are in the batch's order
    /// and complete on `eventLoop`.
    public func call(_ batch: LocalCallBatch, on eventLoop: EventLoop) -> [EventLoopFuture<LocalCallResult>] {
        guard let bound = self.loops.first(where: { $0.eventLoop === eventLoop }) else {
            return batch.calls.map { _ in eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        }
        let promises = batch.calls.map { _ in eventLoop.makePromise(of: LocalCallResult.self) }
        let start = { batch.start(on: bound.value) { index, result in promises[index].succeed(result) } }
        if eventLoop.inEventLoop {
            start()
        } else {
            eventLoop.execute(start)
        }
        return promises.map(\.futureResult)
    }

    /// Starts every call of `batch` on `eventLoop`, which must be the current thread's loop, as
    /// ``call(_:on:)``, but `completion` runs (on that loop) once per call with the call's
    /// index in the batch and its result: no promise and future per call.
    ///
    /// - Returns: false, with no call started, when `eventLoop` is not one of this server's.
    public func call(
        _ batch: LocalCallBatch, onCurrentLoop eventLoop: EventLoop,
        completion: @escaping (_ index: Int, _ result: LocalCallResult) -> Void
    ) -> Bool {
        eventLoop.preconditionInEventLoop()
        guard let bound = self.loops.first(where: { $0.eventLoop === eventLoop }) else { return false }
        batch.start(on: bound.value, completion: completion)
        return true
    }
}
