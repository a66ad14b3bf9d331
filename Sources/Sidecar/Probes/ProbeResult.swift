/// How a probe ended, in grpc_health_probe's taxonomy.
public enum ProbeResult: String, Sendable, CaseIterable {
    case success
    case connectError = "connect_error"
    case rpcError = "rpc_error"
    case timeout
    case notServing = "not_serving"

    /// The exit code of `insight-sidecar probe` (grpc_health_probe's codes).
    public var exitCode: Int32 {
        switch self {
        case .success: 0
        case .connectError: 2
        case .rpcError, .timeout: 3
        case .notServing: 4
        }
    }
}
