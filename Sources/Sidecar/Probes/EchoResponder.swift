import H2Proxy
import Metrics
import NIOCore

/// Receiver mode: answers `insight.probe.v1.Probe/Echo` on the sidecar itself, never
/// forwarding it, with its hop, region and receive time. It is the innermost sidecar of the
/// probe's chain, so it adds its own `insight-chain` and `insight-timing` entries
/// (`dur=0`: nothing behind it).
struct EchoResponder: LocalResponder {
    let hop: String
    let region: String
    let own: OwnItems
    let metrics: ProbeMetrics

    init(hop: String, region: String, metrics: ProbeMetrics) {
        self.hop = hop
        self.region = region
        self.own = OwnItems(hop: hop, region: region)
        self.metrics = metrics
    }

    func handles(_ request: HeaderBlock) -> Bool {
        guard let i = request.firstIndex(of: ":path") else { return false }
        return request.valueEquals(at: i, "/insight.probe.v1.Probe/Echo")
    }

    func respond(to request: HeaderBlock, body: ByteBuffer, receivedAt: NIODeadline, clock: StreamClock)
        -> LocalResponse
    {
        let received = clock.unixMicros()
        var headers = HeaderBlock(capacity: 128)
        headers.append(name: ":status", value: "200")
        headers.append(name: "content-type", value: "application/grpc")
        headers.append(name: "insight-chain", value: self.own.chainItem)
        var trailers = HeaderBlock(capacity: 128)
        var payload = ByteBufferAllocator().buffer(capacity: 0)
        do {
            let echo = try EchoRequest(decoding: GRPCMessageFraming.firstMessage(in: body))
            let id = CorrelationID.find(in: request) ?? echo.id
            let response = EchoResponse(
                id: id, payload: echo.payload, hop: self.hop, region: self.region, receivedUnixMicros: received)
            payload = GRPCMessageFraming.frame(response.encoded())
            trailers.append(name: "grpc-status", value: "0")
            self.metrics.echoAnswered.increment()
        } catch {
            trailers.append(name: "grpc-status", value: "3")
            trailers.append(name: "grpc-message", value: "bad EchoRequest")
        }
        let selfNanos = Int64(bitPattern: clock.localAnswerReady().uptimeNanoseconds &- receivedAt.uptimeNanoseconds)
        let entry = TimingEntry(hop: self.hop, durationNanos: 0, ttfbNanos: nil, selfNanos: max(0, selfNanos))
        trailers.append(name: "insight-timing", value: self.own.timing(entry))
        return LocalResponse(headers: headers, body: payload, trailers: trailers)
    }
}
