import NIOCore

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
