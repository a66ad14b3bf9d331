/// gRPC status codes by number, as they appear in the `code` label.
enum GRPCStatusName {
    static let names = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    ]

    static func name(_ value: Int?) -> String {
        guard let n = value, n >= 0, n < self.names.count else { return "UNKNOWN" }
        return self.names[n]
    }

    /// What a gRPC client reports for a stream reset with `code` (gRPC's HTTP/2 mapping).
    static func forReset(_ code: UInt32) -> String { CallCode.grpcForReset(code).name }
}
