/// How this sidecar takes part in the timing protocol.
public struct TimingOptions: Sendable, Equatable {
    public var hop: String
    public var region: String
    /// Stop appending to `insight-hops` once it has this many entries (loops).
    public var hopLimit = 16
    /// Remove `insight-*` request headers before the upstream sees them.
    public var stripRequestHeaders = false
    /// Remove `insight-timing` (and `insight-chain`) before the client sees them.
    public var stripResponseTiming = false
    /// Distinct service/method pairs with their own series.
    public var maxRoutes = SidecarConfig.defaultMaxRoutes
    /// Append this hop's entry to the response's `server-timing` (W3C Server Timing).
    public var serverTiming = false

    public init(hop: String, region: String) {
        self.hop = hop
        self.region = region
    }
}
