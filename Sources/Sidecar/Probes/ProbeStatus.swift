/// One cell of the probe matrix.
public struct ProbeStatus: Codable, Sendable {
    public var hop: String
    public var sourceRegion: String
    public var target: String
    public var targetRegion: String
    public var kind: String
    public var result: String
    public var code: String
    public var message: String
    public var lastMilliseconds: Double
    public var successRatio: Double
    public var p50Milliseconds: Double
    public var count: Int
    /// Where the probe connected: the target itself (same region) or the upstream that routes to it.
    public var address: String?
    /// The target's own address (from its config, targets file or Consul).
    public var targetAddress: String?

    enum CodingKeys: String, CodingKey {
        case hop, target, kind, result, code, message, count, address
        case targetAddress = "target_address"
        case sourceRegion = "source_region"
        case targetRegion = "target_region"
        case lastMilliseconds = "last_ms"
        case successRatio = "success_ratio"
        case p50Milliseconds = "p50_ms"
    }
}
