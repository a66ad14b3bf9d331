import Foundation
import H2Proxy
import NIOCore

/// A finished probe, classified.
public struct ProbeOutcome: Sendable {
    public var result: ProbeResult
    /// gRPC status name (`OK`, `UNAVAILABLE`, …).
    public var code: String
    public var message: String
    public var seconds: Double
    /// Per-hop segments from the response's `insight-timing`, outermost first.
    public var segments: [TimingChain.Segment]
    /// For echo probes: who answered.
    public var receiverHop: String?
    public var receiverRegion: String?

    /// A connect failure in plain words: `connect to ADDRESS failed: connection refused`.
    ///
    /// `cause` is the pool's text (`upstream ADDRESS unreachable: connection refused`); the
    /// words after `unreachable: ` are the cause.
    static func connectFailure(to address: HostPort, cause: String) -> String {
        var reason = cause
        if let range = cause.range(of: "unreachable: ") {
            reason = String(cause[range.upperBound...])
        }
        return "connect to \(address) failed: \(reason)"
    }

    init(failure message: String) {
        (self.result, self.code, self.message, self.seconds, self.segments) = (
            .connectError, "UNAVAILABLE", message, 0, []
        )
    }

    /// Classifies a finished call; `address` is where the probe connected (named in a connect failure).
    init(_ call: LocalCallResult, kind: ProbeTarget.Kind, address: HostPort) {
        self.seconds = Double(call.endedAt.uptimeNanoseconds &- call.startedAt.uptimeNanoseconds) / 1e9
        self.segments = []
        self.message = ""
        switch call.outcome {
        case .connectFailed(let cause):
            (self.result, self.code, self.message) = (
                .connectError, "UNAVAILABLE", Self.connectFailure(to: address, cause: cause)
            )
            return
        case .timedOut:
            (self.result, self.code, self.message) = (.timeout, "DEADLINE_EXCEEDED", "no response within the timeout")
            return
        case .reset(let code):
            (self.result, self.code, self.message) = (
                .rpcError, GRPCStatusName.forReset(code), "stream reset (\(code))"
            )
            return
        case .connectionLost(let cause):
            (self.result, self.code, self.message) = (.rpcError, "UNAVAILABLE", cause)
            return
        case .completed:
            break
        }
        if let measured = call.measurements {
            // The timing observer already parsed the chain on its way through.
            self.segments = measured.segments
        } else {
            var problems: [TimingHeaders.Problem] = []
            if let trailers = call.trailers ?? call.headers,
                let items = TimingHeaders.parseList("insight-timing", in: trailers, problems: &problems)
            {
                self.segments = TimingChain(entries: items.compactMap(TimingEntry.init)).segments
            }
        }
        let grpcMessage = (call.trailers?.first("grpc-message") ?? call.headers?.first("grpc-message")) ?? ""
        // Foundation's decoding only where there is something to decode (most messages are empty).
        self.message =
            grpcMessage.utf8.contains(UInt8(ascii: "%"))
            ? grpcMessage.removingPercentEncoding ?? grpcMessage : grpcMessage
        guard let status = call.grpcStatus else {
            let http = call.headers?.first(":status") ?? "?"
            (self.result, self.code, self.message) = (.rpcError, "UNKNOWN", "not a gRPC response (HTTP \(http))")
            return
        }
        self.code = GRPCStatusName.name(status)
        guard status == 0 else {
            self.result = status == 4 ? .timeout : .rpcError
            return
        }
        if call.bodyTruncated {
            // What a gRPC client does with a message over its limit.
            (self.result, self.code, self.message) = (
                .rpcError, "RESOURCE_EXHAUSTED",
                "response larger than \(LocalCallResult.maxBodyBytes) bytes, the most a probe reads"
            )
            return
        }
        do {
            let message = try GRPCMessageFraming.firstMessage(in: call.body)
            switch kind {
            case .health:
                let response = try HealthCheckResponse(decoding: message)
                self.result =
                    response.status == HealthCheckResponse.ServingStatus.serving.rawValue ? .success : .notServing
                if self.result == .notServing { self.message = "status \(response.status)" }
            case .echo:
                let response = try EchoResponse(decoding: message)
                self.result = .success
                self.receiverHop = response.hop
                self.receiverRegion = response.region
            }
        } catch {
            (self.result, self.message) = (.rpcError, "bad response message: \(error)")
        }
    }
}
