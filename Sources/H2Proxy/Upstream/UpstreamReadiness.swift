/// Whether the upstream hop can take calls now, and why not: what `/readyz` answers.
///
/// Ready means an HTTP/2 connection of the upstream pool (TLS included, the peer's SETTINGS
/// received) acknowledged an empty SETTINGS frame within the deadline; see ``ProxyServer/checkReadiness(deadline:)``.
public struct UpstreamReadiness: Sendable, Equatable {
    public var isReady: Bool
    /// One line in plain words, e.g. "upstream 10.0.0.7:8080 acknowledged an HTTP/2 SETTINGS frame in 3 ms".
    public var detail: String

    public init(isReady: Bool, detail: String) {
        self.isReady = isReady
        self.detail = detail
    }
}
