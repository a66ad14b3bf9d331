/// Why a proxied stream ended.
public enum StreamEndReason: Sendable, Equatable {
    /// Both directions ended cleanly.
    case completed
    /// The client reset the stream (error code).
    case downstreamReset(UInt32)
    /// The upstream reset the stream (error code).
    case upstreamReset(UInt32)
    /// The upstream could not be reached or its connection was lost; the proxy answered, for a
    /// non-gRPC stream with HTTP `status` (502, or 503 when no upstream connection had room in
    /// time). gRPC streams get UNAVAILABLE whatever `status` says.
    case upstreamUnavailable(String, status: Int = 502)
    /// The request's header list, with this sidecar's additions, was over the
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` the upstream advertised, so it was not sent: the proxy
    /// answered gRPC RESOURCE_EXHAUSTED (what gRPC answers to metadata over its limit) or HTTP
    /// 431 itself, naming the sizes.
    case requestTooLarge(String)
}
