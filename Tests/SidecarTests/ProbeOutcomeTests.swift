import H2Proxy
import NIOCore
import Testing

@testable import Sidecar

@Suite struct ProbeOutcomeTests {
    static func result(status: Int, body: ByteBuffer, truncated: Bool) -> LocalCallResult {
        var headers = HeaderBlock(capacity: 0)
        headers.append(name: ":status", value: "200")
        var trailers = HeaderBlock(capacity: 0)
        trailers.append(name: "grpc-status", value: "\(status)")
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000)
        return LocalCallResult(
            outcome: .completed, headers: headers, body: body, trailers: trailers, startedAt: t0,
            endedAt: t0 + .milliseconds(2), measurements: nil, bodyTruncated: truncated)
    }

    /// A response cut at the probe's limit is RESOURCE_EXHAUSTED (what a gRPC client reports for
    /// a message over its limit), not a decoding error with the server's status OK.
    @Test func aResponseOverTheLimitIsResourceExhausted() {
        let serving = GRPCMessageFraming.frame(HealthCheckResponse(status: 1).encoded())
        let whole = ProbeOutcome(
            Self.result(status: 0, body: serving, truncated: false), kind: .health,
            address: HostPort(host: "127.0.0.1", port: 1))
        #expect(whole.result == .success && whole.code == "OK")
        let cut = ProbeOutcome(
            Self.result(status: 0, body: serving, truncated: true), kind: .health,
            address: HostPort(host: "127.0.0.1", port: 1))
        #expect(cut.result == .rpcError)
        #expect(cut.code == "RESOURCE_EXHAUSTED")
        #expect(cut.message.contains("1048576"))
    }
}
