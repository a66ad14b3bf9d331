import Metrics

/// TLS handshake counters by side of the proxy; every series exists from the start.
public final class TLSMetrics: Sendable {
    private let failures: [Counter]
    private let completed: [Counter]
    private let resumed: [Counter]
    private static let reasons = TLSHandshakeFailure.Reason.allCases

    public init(registry: MetricsRegistry) {
        var failures: [Counter] = []
        var completed: [Counter] = []
        var resumed: [Counter] = []
        for side in TLSEndpoint.Side.allCases {
            for reason in Self.reasons {
                failures.append(
                    registry.counter(
                        "insight_tls_handshake_errors_total", help: "Failed TLS handshakes, by side and reason.",
                        labels: [("side", side.rawValue), ("reason", reason.rawValue)]))
            }
            completed.append(
                registry.counter(
                    "insight_tls_handshakes_total", help: "Completed TLS handshakes (h2 agreed), by side.",
                    labels: [("side", side.rawValue)]))
            resumed.append(
                registry.counter(
                    "insight_tls_sessions_resumed_total",
                    help: "Completed TLS handshakes that resumed an earlier session, by side.",
                    labels: [("side", side.rawValue)]))
        }
        self.failures = failures
        self.completed = completed
        self.resumed = resumed
    }

    private static func sideIndex(_ side: TLSEndpoint.Side) -> Int { side == .downstream ? 0 : 1 }

    func handshakeFailed(side: TLSEndpoint.Side, reason: TLSHandshakeFailure.Reason) {
        let index = Self.sideIndex(side) * Self.reasons.count + Self.reasons.firstIndex(of: reason)!
        self.failures[index].increment()
    }

    func handshakeCompleted(side: TLSEndpoint.Side, resumed: Bool) {
        self.completed[Self.sideIndex(side)].increment()
        if resumed { self.resumed[Self.sideIndex(side)].increment() }
    }
}
