import Atomics
import H2Proxy
import NIOCore

/// The demo's gRPC service: the standard health service and `insight.demo.v1.Demo/Unary`
/// (echoes its request) with a latency that can be changed while it runs. Built on the
/// sidecar's own HTTP/2 stack as a ``LocalResponder`` that answers every request.
struct DemoService: LocalResponder {
    /// Service latency in nanoseconds.
    let latency: ManagedAtomic<Int64>

    func handles(_ request: HeaderBlock) -> Bool { true }

    func respond(to request: HeaderBlock, body: ByteBuffer, receivedAt: NIODeadline, clock: StreamClock)
        -> LocalResponse
    {
        var headers = HeaderBlock(capacity: 96)
        headers.append(name: ":status", value: "200")
        headers.append(name: "content-type", value: "application/grpc")
        var trailers = HeaderBlock(capacity: 64)
        let path = request.first(":path") ?? ""
        switch path {
        case "/grpc.health.v1.Health/Check":
            trailers.append(name: "grpc-status", value: "0")
            return LocalResponse(
                headers: headers, body: GRPCMessageFraming.frame(HealthCheckResponse(status: 1).encoded()),
                trailers: trailers)
        case "/insight.demo.v1.Demo/Unary":
            trailers.append(name: "grpc-status", value: "0")
            return LocalResponse(
                headers: headers, body: body, trailers: trailers,
                delay: .nanoseconds(self.latency.load(ordering: .relaxed)))
        default:
            headers.append(name: "grpc-status", value: "12")
            headers.append(name: "grpc-message", value: "unknown method \(path)")
            return LocalResponse(headers: headers, body: ByteBufferAllocator().buffer(capacity: 0), trailers: nil)
        }
    }
}
