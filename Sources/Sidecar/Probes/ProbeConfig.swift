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

public struct HeaderPair: Sendable, Equatable {
    public var name: String
    public var value: String
}

/// Consul service discovery for probe targets.
public struct ConsulConfig: Sendable, Equatable {
    public struct Service: Sendable, Equatable {
        public var name: String
        public var kind: ProbeTarget.Kind = .health
        /// The gRPC health service name to check.
        public var healthService = ""
        public var tag: String?
    }

    public var address = HostPort(host: "127.0.0.1", port: 8500)
    public var services: [Service] = []
    /// Datacenters to query; empty = the agent's own.
    public var datacenters: [String] = []
    /// Region of each datacenter; a datacenter not listed is its own region name.
    public var regionForDatacenter: [String: String] = [:]
    public var token: String?
    /// Blocking query wait.
    public var wait: TimeAmount = .seconds(30)
}
