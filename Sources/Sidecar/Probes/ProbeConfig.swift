import NIOCore

/// The `probes:` section: what to probe, how often, and how to route to other regions.
public struct ProbeConfig: Sendable, Equatable {
    public var interval: TimeAmount = .seconds(5)
    public var timeout: TimeAmount = .seconds(1)
    /// Probes in flight at once, over all targets.
    public var maxConcurrency = 64
    /// Where probes to other regions go (the Mediary); default: `upstream`.
    public var crossRegionUpstream: HostPort?
    /// Extra request headers per target region (e.g. `:authority` or a region header) that the
    /// cross-region upstream routes by.
    public var routeHeaders: [String: [HeaderPair]] = [:]
    public var targets: [ProbeTarget] = []
    /// A JSON or YAML file of targets, reloaded when it changes.
    public var targetsFile: String?
    /// How often the targets file is checked for changes.
    public var targetsFileRefresh: TimeAmount = .seconds(2)
    public var consul: ConsulConfig?

    public init() {}

    public var isEnabled: Bool { !self.targets.isEmpty || self.targetsFile != nil || self.consul != nil }
}
