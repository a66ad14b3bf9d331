import Foundation
import NIOCore

/// One Consul blocking-query watch (a service in a datacenter), as a pure state machine.
///
/// Follows Consul's blocking-query rules: send the last `X-Consul-Index` back as `index`;
/// if it goes backwards, start again from 0; publish only when the contents changed; on
/// errors keep the last good targets and back off exponentially.
struct ConsulWatch {
    enum Action: Equatable {
        /// New targets for this watch.
        case publish([ProbeTarget])
        /// Nothing changed; query again at once (the query itself blocks).
        case unchanged
        /// Query again after `after`; `reason` is the metric reason, `logNow` true on a state change.
        case retry(after: TimeAmount, reason: String, detail: String, logNow: Bool)
    }

    let service: ConsulConfig.Service
    let datacenter: String?
    let config: ConsulConfig
    private(set) var index: UInt64 = 0
    private(set) var lastGood: [ProbeTarget]?
    private var failures = 0
    private var lastFailureReason: String?

    init(service: ConsulConfig.Service, datacenter: String?, config: ConsulConfig) {
        self.service = service
        self.datacenter = datacenter
        self.config = config
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
        do {
            targets = try self.parse(body)
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
        if let last = self.lastGood, Set(last) == Set(targets), !recovered { return .unchanged }
        self.lastGood = targets
        return .publish(targets)
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

    func parse(_ body: ByteBuffer) throws -> [ProbeTarget] {
        let entries = try JSONDecoder().decode([Entry].self, from: Data(body.readableBytesView))
        return try entries.map { e in
            let host = (e.Service.Address?.isEmpty == false ? e.Service.Address : nil) ?? e.Node.Address
            guard !host.isEmpty, (1...65535).contains(e.Service.Port) else {
                throw ConfigError(field: "consul", reason: "entry \(e.Service.ID) has no usable address")
            }
            let dc = e.Node.Datacenter ?? self.datacenter ?? ""
            let region = self.config.regionForDatacenter[dc] ?? dc
            var t = ProbeTarget(
                name: "\(e.Service.Service)/\(e.Service.ID)", address: HostPort(host: host, port: e.Service.Port),
                region: region, kind: self.service.kind)
            t.service = self.service.healthService
            t.source = "consul"
            return t
        }
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(
            withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=?/+"))) ?? s
    }
}
