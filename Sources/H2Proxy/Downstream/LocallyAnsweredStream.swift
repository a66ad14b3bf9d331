import NIOCore

/// A client stream answered by a ``LocalResponder``: the request body is collected (up to
/// ``maxRequestBytes``), then the response is written.
final class LocallyAnsweredStream: DownstreamStream {
    static let maxRequestBytes = 64 << 10

    let downstream: DownstreamConnection
    let streamID: Int32
    let request: HeaderBlock
    let responder: LocalResponder
    let receivedAt: NIODeadline
    private var body: ByteBuffer
    private var answered = false
    private var closed = false

    init(
        downstream: DownstreamConnection, streamID: Int32, request: HeaderBlock, responder: LocalResponder,
        receivedAt: NIODeadline
    ) {
        self.downstream = downstream
        self.streamID = streamID
        self.request = request
        self.responder = responder
        self.receivedAt = receivedAt
        self.body = ByteBufferAllocator().buffer(capacity: 0)
    }

    func requestData(_ chunk: ByteBuffer) {
        var chunk = chunk
        let n = chunk.readableBytes
        self.downstream.consume(streamID: self.streamID, bytes: n)
        guard !self.answered else { return }
        if self.body.readableBytes + n > Self.maxRequestBytes {
            self.answered = true
            self.downstream.resetStream(self.streamID, errorCode: H2ErrorCode.enhanceYourCalm)
            return
        }
        self.body.writeBuffer(&chunk)
    }

    func requestEnd(trailers: HeaderBlock?) {
        guard !self.answered else { return }
        self.answered = true
        let response = self.responder.respond(
            to: self.request, body: self.body, receivedAt: self.receivedAt, clock: self.downstream.loop.clock)
        if response.delay > .zero {
            self.downstream.loop.eventLoop.assumeIsolated().scheduleTask(in: response.delay) {
                guard !self.closed else { return }
                self.write(response)
                self.downstream.loop.flushDirty()
            }
        } else {
            self.write(response)
        }
    }

    private func write(_ response: LocalResponse) {
        let session = self.downstream.session
        do {
            if response.body.readableBytes == 0 && response.trailers == nil {
                // Trailers-Only: one HEADERS frame with END_STREAM.
                try session.submitResponse(streamID: self.streamID, response.headers, endStream: true)
                self.downstream.loop.markDirty(self.downstream)
                return
            }
            try session.submitResponse(streamID: self.streamID, response.headers, endStream: false)
            session.sendData(streamID: self.streamID, response.body)
            session.endStream(streamID: self.streamID, trailers: response.trailers)
        } catch {
            self.downstream.resetStream(self.streamID, errorCode: H2ErrorCode.internalError)
        }
        self.downstream.loop.markDirty(self.downstream)
    }

    func responseDataWritten(_ bytes: Int) {}

    func downstreamDidClose(errorCode: UInt32, connectionLost: Bool) {
        self.closed = true
    }
}
