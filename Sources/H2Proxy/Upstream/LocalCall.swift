import NIOCore

/// A request this sidecar makes itself (a probe), on an upstream pool like a proxied stream,
/// so that it shares connections, timing headers and observers with live traffic.
final class LocalCall: UpstreamStream {

    /// Strong: the call ends on its own timer, whatever happened to the server that started it.
    let loop: ProxyLoop
    let pool: UpstreamPool
    private var request: HeaderBlock
    private let requestBody: ByteBuffer
    /// From the call's start to its response's end.
    let timeout: TimeAmount
    /// Called once, on the call's loop, with ``index`` and the result; nil once called (the
    /// call has ended).
    private var completion: Completion?
    /// The call's place in its batch, given to ``completion``.
    private let index: Int
    private let observer: StreamObserver?
    private let startedAt: NIODeadline
    private var connection: UpstreamConnection?
    private var streamID: Int32 = 0
    /// Shared with the calls of its batch that have the same timeout; weak, so that the
    /// deadline (which holds its calls until they end) and the call form no cycle.
    private weak var deadline: LocalCallDeadline?
    /// This call's slot in ``deadline``.
    private var deadlineSlot = 0
    private var headers: HeaderBlock?
    private var body: ByteBuffer
    /// DATA past ``LocalCallResult/maxBodyBytes`` came and was dropped.
    private var bodyTruncated = false
    private var trailers: HeaderBlock?
    /// What each HEADERS block means and when a refusal may be retried, as for a proxied stream.
    private var progress = ResponseProgress()
    private var responseEnded: Bool { self.progress.phase == .ended }
    private var retries = 0
    /// Whether the current attempt's request HEADERS were written (``UpstreamLoss``).
    private var requestHeadersSent = false

    /// What a call's end runs: its batch's handler, with the call's index in the batch. A
    /// closure per batch rather than a promise per call: a promise cost each probe its future,
    /// its callback list and a closure, plus a dynamic cast of the loop.
    typealias Completion = (_ index: Int, _ result: LocalCallResult) -> Void

    init(
        loop: ProxyLoop, pool: UpstreamPool, request: HeaderBlock, body: ByteBuffer, timeout: TimeAmount,
        index: Int, completion: @escaping Completion
    ) {
        self.loop = loop
        self.pool = pool
        // Copied into a block of the loop's pool: the caller's block (a probe's, made once per
        // target) stays shared, and the observer's edits would otherwise copy it (three mallocs).
        self.request = loop.headerBlocks.take()
        self.request.append(contentsOf: request)
        self.requestBody = body
        self.timeout = timeout
        self.index = index
        self.completion = completion
        self.startedAt = loop.clock.requestReceived()
        self.body = Self.emptyBody
        self.observer = loop.observerSource?.makeObserver(for: request)
    }

    /// Sends the call on a deadline of its own, ``timeout`` from now.
    func start() {
        let deadline = LocalCallDeadline(calls: [self])
        deadline.arm(on: self.loop, in: self.timeout)
        deadline.startCalls()
    }

    /// Sends the call; `deadline` (armed by the caller, shared by calls with the same
    /// ``timeout`` started together) ends it as timed out if it is still running then.
    func start(deadline: LocalCallDeadline, slot: Int) {
        self.deadline = deadline
        self.deadlineSlot = slot
        self.observer?.requestHeadersWillForward(&self.request, receivedAt: self.startedAt)
        self.pool.open(self)
    }

    func attach(to connection: UpstreamConnection) {
        guard self.completion != nil else { return }
        let endStream = self.requestBody.readableBytes == 0
        do {
            self.streamID = try connection.session.submitRequest(self.request, endStream: endStream)
        } catch {
            self.finish(.connectionLost("stream not accepted: \(error)"))
            return
        }
        self.connection = connection
        self.requestHeadersSent = false
        connection.streams[self.streamID] = self
        if !endStream {
            connection.session.sendData(streamID: self.streamID, self.requestBody)
            connection.session.endStream(streamID: self.streamID, trailers: nil)
        }
        self.loop.markDirty(connection)
    }

    func failUnavailable(_ cause: String) {
        self.finish(.connectFailed(self.loop.configuration.faultPrefix.map { "\($0): \(cause)" } ?? cause))
    }

    /// The pool has already taken the call out of its queue; ``finish(_:)`` ends it once, whichever
    /// of this and the call's deadline comes first.
    func upstreamWaitTimedOut(_ cause: String) {
        guard self.completion != nil else { return }
        self.failUnavailable(cause)
    }

    func responseHeaders(_ headers: consuming HeaderBlock, kind: HeadersKind, endStream: Bool) {
        switch self.progress.headers(kind: kind, endStream: endStream) {
        case .interim, .ignore:
            return
        case .response(let endStream):
            if endStream {
                self.observer?.trailersWillForward(
                    &headers, trailersOnly: true, receivedAt: self.loop.clock.firstByte())
            } else {
                self.observer?.responseHeadersWillForward(&headers, at: self.loop.clock.firstByte())
            }
            self.headers = headers
        case .trailers:
            self.observer?.trailersWillForward(&headers, trailersOnly: false, receivedAt: self.loop.clock.responseEnd())
            self.trailers = headers
        case .protocolError:
            // Not a response: stop the stream; the call ends as reset when its close arrives.
            self.connection?.resetStream(self.streamID, errorCode: H2ErrorCode.protocolError)
        }
    }

    func responseData(_ chunk: ByteBuffer) {
        var chunk = chunk
        let n = chunk.readableBytes
        if let connection = self.connection {
            connection.session.consume(streamID: self.streamID, bytes: n)
            self.loop.markDirty(connection)
        }
        if let observer = self.observer {
            let at = observer.wantsDataTimes ? self.loop.clock.dataReceived() : self.startedAt
            observer.dataReceived(.response, bytes: n, messages: 0, at: at)
        }
        if self.completion == nil {
            // Ended already (its result is out): nothing keeps the bytes.
        } else if self.body.readableBytes == 0 {
            // Most responses are one DATA frame: kept as the slice it is (no copy). It holds its
            // read buffer only until the call ends, which is usually in the same read.
            self.body = chunk
        } else if self.body.readableBytes + n <= LocalCallResult.maxBodyBytes {
            self.body.writeBuffer(&chunk)
        } else {
            self.bodyTruncated = true
        }
    }

    func responseDataEnded() {
        guard self.progress.dataEnded() else { return }
        var block = HeaderBlock(capacity: 0)
        self.observer?.trailersWillForward(&block, trailersOnly: false, receivedAt: self.loop.clock.responseEnd())
        self.trailers = block
    }

    /// The upstream session serialised the call's request HEADERS: "sent".
    func requestHeadersWritten(at sentAt: NIODeadline) {
        self.requestHeadersSent = true
        self.observer?.requestHeadersSent(at: sentAt)
    }

    func requestDataWritten(_ bytes: Int) {}

    func upstreamDidClose(errorCode: UInt32) {
        self.connection?.streams.removeValue(forKey: self.streamID)
        self.connection = nil
        if self.responseEnded && errorCode == 0 {
            self.finish(.completed)
        } else if self.completion != nil,
            self.progress.mayReplay(
                closedWith: errorCode, retries: self.retries, maxRetries: self.loop.configuration.maxRetries)
        {
            // Refused before any processing: try again on a fresh pick from the pool.
            self.retries += 1
            self.pool.open(self)
        } else {
            self.finish(self.responseEnded ? .completed : .reset(errorCode))
        }
    }

    func upstreamConnectionLost(_ cause: String, _ loss: UpstreamLoss) {
        self.connection = nil
        if self.completion != nil, loss.provesUnprocessed(requestHeadersSent: self.requestHeadersSent),
            self.progress.mayReplay(
                closedWith: H2ErrorCode.refusedStream, retries: self.retries,
                maxRetries: self.loop.configuration.maxRetries)
        {
            // Never processed upstream: try again on a fresh pick from the pool, as if refused.
            self.retries += 1
            self.pool.open(self)
            return
        }
        self.finish(self.responseEnded ? .completed : .connectionLost(cause))
    }

    /// The call's deadline passed: it ends as timed out unless it has ended already. The
    /// deadline writes the loop's connections once for all of its calls.
    func deadlinePassed() {
        guard self.completion != nil else { return }
        if let connection = self.connection {
            connection.streams.removeValue(forKey: self.streamID)
            connection.resetStream(self.streamID, errorCode: H2ErrorCode.cancel)
            self.connection = nil
        } else {
            self.pool.cancelWaiting(self)
        }
        self.finish(.timedOut)
    }

    private func finish(_ outcome: LocalCallResult.Outcome) {
        guard let completion = self.completion else { return }
        self.completion = nil
        self.deadline?.callEnded(slot: self.deadlineSlot)
        self.deadline = nil
        let now = self.loop.clock.streamEnded()
        let reason: StreamEndReason
        switch outcome {
        case .completed: reason = .completed
        case .connectFailed(let c), .connectionLost(let c): reason = .upstreamUnavailable(c)
        case .reset(let code): reason = .upstreamReset(code)
        case .timedOut: reason = .downstreamReset(H2ErrorCode.cancel)
        }
        self.observer?.streamEnded(reason, at: now)
        completion(
            self.index,
            LocalCallResult(
                outcome: outcome, headers: self.headers, body: self.body, trailers: self.trailers,
                startedAt: self.startedAt, endedAt: now, measurements: self.observer?.measurements,
                bodyTruncated: self.bodyTruncated))
        // The completion has run (on this loop): the blocks go back
        // to the loop's pool for later header blocks to be decoded into. A caller that kept the
        // result keeps its blocks: the pool's next write to a block still shared copies it first.
        self.recycleBlocks()
        // Whoever still holds the ended call keeps no response bytes (the slice would keep its
        // whole read buffer).
        self.body = Self.emptyBody
    }

    /// The body of a call before its response's first DATA (shared: no allocation per call).
    private static let emptyBody = ByteBufferAllocator().buffer(capacity: 0)

    private func recycleBlocks() {
        let blocks = self.loop.headerBlocks
        blocks.give(self.request)
        self.request = HeaderBlock(capacity: 0)
        if let headers = self.headers {
            self.headers = nil
            blocks.give(headers)
        }
        if let trailers = self.trailers {
            self.trailers = nil
            blocks.give(trailers)
        }
    }
}
