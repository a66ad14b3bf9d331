/// Why a proxied stream ended.
public enum StreamEndReason: Sendable, Equatable {
    /// Both directions ended cleanly.
    case completed
    /// The client reset the stream (error code).
    case downstreamReset(UInt32)
    /// The upstream reset the stream (error code).
    case upstreamReset(UInt32)
    /// The upstream could not be reached or its connection was lost; the proxy answered.
    case upstreamUnavailable(String)
}
