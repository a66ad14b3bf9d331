import Atomics
import Foundation
import H2Proxy
import NIOConcurrencyHelpers
import NIOCore

/// The demo's client: unary calls at a steady rate to the outermost sidecar, over the
/// proxy core's own client connections.
final class TrafficGenerator: Sendable {
    let client: ProxyServer
    let target: HostPort
    let rate: Double
    let sent = ManagedAtomic<Int>(0)
    let failed = ManagedAtomic<Int>(0)
    private let task = NIOLockedValueBox<RepeatedTask?>(nil)

    init(client: ProxyServer, target: HostPort, rate: Double) {
        self.client = client
        self.target = target
        self.rate = rate
    }

    func start() {
        guard self.rate > 0 else { return }
        let loop = self.client.eventLoops[0]
        let every = TimeAmount.nanoseconds(Int64(1e9 / self.rate))
        let t = loop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in self.fire() }
        self.task.withLockedValue { $0 = t }
    }

    func stop() { self.task.withLockedValue { $0?.cancel() } }

    private func fire() {
        var h = HeaderBlock(capacity: 256)
        h.append(name: ":method", value: "POST")
        h.append(name: ":scheme", value: "http")
        h.append(name: ":authority", value: "demo-service.b")
        h.append(name: ":path", value: "/insight.demo.v1.Demo/Unary")
        h.append(name: "content-type", value: "application/grpc")
        h.append(name: "te", value: "trailers")
        h.append(name: "grpc-timeout", value: "5S")
        var payload = ByteBufferAllocator().buffer(capacity: 8)
        payload.writeString("hello")
        self.sent.wrappingIncrement(ordering: .relaxed)
        let failed = self.failed
        self.client.call(
            host: self.target.host, port: self.target.port, request: h, body: GRPCMessageFraming.frame(payload),
            timeout: .seconds(5), on: self.client.eventLoops[0]
        ).whenComplete { result in
            if case .success(let r) = result, r.outcome == .completed, r.grpcStatus == 0 { return }
            failed.wrappingIncrement(ordering: .relaxed)
        }
    }
}
