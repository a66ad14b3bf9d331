import Foundation
import NIOCore

/// One Consul blocking-query watch (a service in a datacenter), as a pure state machine.
///
/// Follows Consul's blocking-query rules: send the last `X-Consul-Index` back as `index`;
/// if it goes backwards, start again from 0; publish only when the contents changed; on
/// errors keep the last good targets and back off exponentially.
///
/// Each instance's region comes from its datacenter (see ``region(ofDatacenter:)``); an
/// instance whose datacenter has no region is not probed but reported once in
/// ``Action/publish(_:unmapped:)``: probing it through the upstream would report whatever
/// the upstream answers, not the instance.
struct ConsulWatch {
    /// An instance left out because its datacenter maps to no region.
    struct Unmapped: Equatable, Hashable {
        var target: String
        var address: HostPort
        var datacenter: String
    }

    enum Action: Equatable {
        /// New targets for this watch, and the instances newly left out (each reported once
        /// while it stays in Consul's answer).
        case publish([ProbeTarget], unmapped: [Unmapped])
        /// Nothing changed; query again at once (the query itself blocks).
        case unchanged
        /// Query again after `after`; `reason` is the metric reason, `logNow` true on a state change.
        case retry(after: TimeAmount, reason: String, detail: String, logNow: Bool)
    }

    let service: ConsulConfig.Service
    let datacenter: String?
    let config: ConsulConfig
    /// The sidecar's own region (`region`): where the local agent's instances are.
    let localRegion: String
    /// Regions the sidecar can route probes to by name: its own and those in `probes.route_headers`.
    let knownRegions: Set<String>
    private(set) var index: UInt64 = 0
    private(set) var lastGood: [ProbeTarget]?
    private var failures = 0
    private var lastFailureReason: String?
    /// Unmapped instances already reported, as of the last answer.
    private(set) var reportedUnmapped: Set<Unmapped> = []

    init(
        service: ConsulConfig.Service, datacenter: String?, config: ConsulConfig, localRegion: String,
        knownRegions: Set<String> = []
    ) {
        self.service = service
        self.datacenter = datacenter
        self.config = config
        self.localRegion = localRegion
        self.knownRegions = knownRegions.union([localRegion])
    }

    /// The region of an instance in `datacenter` (Consul's `Node.Datacenter`), nil if none.
    ///
    /// In order: `region_for_datacenter`; without `datacenters` (the watch asks the local
    /// agent for its own datacenter) the sidecar's own region; a datacenter named like a
    /// known region (the sidecar's own or a `route_headers` key) is that region; else nil.
    func region(ofDatacenter datacenter: String) -> String? {
        if let region = self.config.regionForDatacenter[datacenter] { return region }
        if self.datacenter == nil { return self.localRegion }
        if self.knownRegions.contains(datacenter) { return datacenter }
        return nil
    }

    /// The request path for the next query.
    var path: String {
        var p = "/v1/health/service/\(Self.escape(self.service.name))?passing"
        if let dc = self.datacenter { p += "&dc=\(Self.escape(dc))" }
        if let tag = self.service.tag { p += "&tag=\(Self.escape(tag))" }
        if self.index > 0 { p += "&index=\(self.index)&wait=\(max(1, self.config.wait.nanoseconds / 1_000_000_000))s" }
        return p
    }

    mutating func received(status: Int, indexHeader: String?, body: ByteBuffer) -> Action {
        guard status == 200 else { return self.failed(reason: "http_\(status / 100)xx", detail: "HTTP \(status)") }
        guard let header = indexHeader, let newIndex = UInt64(header) else {
            return self.failed(reason: "malformed", detail: "missing or invalid X-Consul-Index")
        }
        let targets: [ProbeTarget]
        let unmapped: [Unmapped]
        do {
            (targets, unmapped) = try self.parse(body)
        } catch {
            return self.failed(reason: "malformed", detail: "\(error)")
        }
        if newIndex < self.index {
            // Consul: an index that goes backwards means a reset; start over from 0.
            let old = self.index
            self.index = 0
            return self.failed(reason: "index_backwards", detail: "X-Consul-Index went from \(old) to \(newIndex)")
        }
        self.index = max(newIndex, 1)
        let recovered = self.lastFailureReason != nil
        self.failures = 0
        self.lastFailureReason = nil
        let newlyUnmapped = unmapped.filter { !self.reportedUnmapped.contains($0) }
        self.reportedUnmapped = Set(unmapped)
        if let last = self.lastGood, Set(last) == Set(targets), !recovered, newlyUnmapped.isEmpty {
            return .unchanged
        }
        self.lastGood = targets
        return .publish(targets, unmapped: newlyUnmapped)
    }

    mutating func failed(reason: String, detail: String) -> Action {
        self.failures += 1
        let logNow = self.lastFailureReason != reason
        self.lastFailureReason = reason
        let seconds = min(30.0, pow(2.0, Double(min(self.failures - 1, 5))))
        return .retry(after: .milliseconds(Int64(seconds * 1000)), reason: reason, detail: detail, logNow: logNow)
    }

    private struct Entry: Decodable {
        struct Node: Decodable {
            var Node: String
            var Address: String
            var Datacenter: String?
        }
        struct Service: Decodable {
            var ID: String
            var Service: String
            var Address: String?
            var Port: Int
        }
        var Node: Node
        var Service: Service
    }

    /// The instances in a health answer: those with a region, and those without one.
    func parse(_ body: ByteBuffer) throws -> (targets: [ProbeTarget], unmapped: [Unmapped]) {
        let entries = try JSONDecoder().decode([Entry].self, from: Data(body.readableBytesView))
        var targets: [ProbeTarget] = []
        var unmapped: [Unmapped] = []
        for e in entries {
            let host = (e.Service.Address?.isEmpty == false ? e.Service.Address : nil) ?? e.Node.Address
            guard !host.isEmpty, (1...65535).contains(e.Service.Port) else {
                throw ConfigError(field: "consul", reason: "entry \(e.Service.ID) has no usable address")
            }
            let name = "\(e.Service.Service)/\(e.Service.ID)"
            let address = HostPort(host: host, port: e.Service.Port)
            let dc = (e.Node.Datacenter?.isEmpty == false ? e.Node.Datacenter : nil) ?? self.datacenter ?? ""
            guard let region = self.region(ofDatacenter: dc) else {
                unmapped.append(Unmapped(target: name, address: address, datacenter: dc))
                continue
            }
            var t = ProbeTarget(name: name, address: address, region: region, kind: self.service.kind)
            t.service = self.service.healthService
            t.source = "consul"
            targets.append(t)
        }
        return (targets, unmapped)
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(
            withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=?/+"))) ?? s
    }
}
