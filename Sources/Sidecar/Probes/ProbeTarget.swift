import NIOCore

/// Something to probe: where it is, in which region, and how.
public struct ProbeTarget: Hashable, Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        /// `grpc.health.v1.Health/Check`; success is OK + SERVING.
        case health
        /// `insight.probe.v1.Probe/Echo`, answered by a sidecar in receiver mode.
        case echo
    }

    public var name: String
    public var address: HostPort
    public var region: String
    public var kind: Kind
    /// The health service name (`""` = the whole server).
    public var service: String = ""
    /// Overrides `probes.interval` / `probes.timeout`.
    public var interval: TimeAmount?
    public var timeout: TimeAmount?
    /// `:authority` to send; default: the address (or the region's route headers).
    public var authority: String?
    /// Where the target came from: `static`, `file` or `consul`.
    public var source: String = "static"

    public init(name: String, address: HostPort, region: String, kind: Kind) {
        self.name = name
        self.address = address
        self.region = region
        self.kind = kind
    }

    /// The labels of the target's series (`target`, `target_region`, `kind`): targets at two
    /// addresses with the same name, region and kind share them.
    struct SeriesLabels: Hashable {
        var name: String
        var region: String
        var kind: Kind
    }

    var seriesLabels: SeriesLabels { SeriesLabels(name: self.name, region: self.region, kind: self.kind) }

    /// Identity in the schedule: a target is the same target while these stay the same.
    var key: String { "\(self.kind.rawValue)|\(self.name)|\(self.address)" }
}
