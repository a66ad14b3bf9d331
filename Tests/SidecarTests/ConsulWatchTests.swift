import NIOCore
import Testing

@testable import Sidecar

@Suite struct ConsulWatchTests {
    let config: ConsulConfig = {
        var c = ConsulConfig()
        c.services = [.init(name: "gateway", kind: .health, healthService: "", tag: "insight")]
        c.regionForDatacenter = ["dc2": "b"]
        return c
    }()

    func body(_ entries: [(String, String, String, Int)], datacenter: String = "dc2") -> ByteBuffer {
        // (id, node address, service address, port)
        let json = entries.map { id, node, svc, port in
            """
            {"Node":{"Node":"n-\(id)","Address":"\(node)","Datacenter":"\(datacenter)"},
             "Service":{"ID":"\(id)","Service":"gateway","Address":"\(svc)","Port":\(port),"Tags":["insight"]},
             "Checks":[]}
            """
        }
        var b = ByteBufferAllocator().buffer(capacity: 256)
        b.writeString("[" + json.joined(separator: ",") + "]")
        return b
    }

    @Test func blockingQueryIndexAndContents() {
        var w = ConsulWatch(
            service: self.config.services[0], datacenter: "dc2", config: self.config, localRegion: "a")
        #expect(w.path == "/v1/health/service/gateway?passing&dc=dc2&tag=insight")
        guard
            case .publish(let targets, unmapped: []) = w.received(
                status: 200, indexHeader: "10", body: self.body([("g1", "10.0.0.1", "", 8080)]))
        else {
            Issue.record("expected publish")
            return
        }
        #expect(targets.map(\.address) == [HostPort(host: "10.0.0.1", port: 8080)])
        #expect(targets.map(\.region) == ["b"])
        #expect(targets.map(\.name) == ["gateway/g1"])
        #expect(w.path.hasSuffix("&index=10&wait=30s"))
        // Same contents at a new index: nothing to publish.
        #expect(
            w.received(status: 200, indexHeader: "11", body: self.body([("g1", "10.0.0.1", "", 8080)])) == .unchanged)
        // Service.Address wins over Node.Address.
        guard
            case .publish(let moved, unmapped: []) = w.received(
                status: 200, indexHeader: "12", body: self.body([("g1", "10.0.0.1", "10.9.9.9", 9090)]))
        else {
            Issue.record("expected publish")
            return
        }
        #expect(moved.map(\.address) == [HostPort(host: "10.9.9.9", port: 9090)])
    }

    @Test func faultsKeepTheLastGoodSetAndBackOff() {
        var w = ConsulWatch(service: self.config.services[0], datacenter: nil, config: self.config, localRegion: "a")
        _ = w.received(status: 200, indexHeader: "50", body: self.body([("g1", "10.0.0.1", "", 1)]))
        let good = w.lastGood
        guard case .retry(let a1, "http_5xx", _, true) = w.received(status: 500, indexHeader: nil, body: self.body([]))
        else {
            Issue.record("expected retry")
            return
        }
        guard case .retry(let a2, "http_5xx", _, false) = w.received(status: 503, indexHeader: nil, body: self.body([]))
        else {
            Issue.record("expected retry")
            return
        }
        #expect(a2 > a1)
        var junk = ByteBufferAllocator().buffer(capacity: 8)
        junk.writeString("{not json")
        guard case .retry(_, "malformed", _, true) = w.received(status: 200, indexHeader: "51", body: junk) else {
            Issue.record("expected malformed")
            return
        }
        guard case .retry(_, "index_backwards", _, _) = w.received(status: 200, indexHeader: "7", body: self.body([]))
        else {
            Issue.record("expected index_backwards")
            return
        }
        #expect(w.index == 0)
        #expect(w.lastGood == good)
        // Recovery publishes again even with the same contents.
        guard case .publish = w.received(status: 200, indexHeader: "8", body: self.body([("g1", "10.0.0.1", "", 1)]))
        else {
            Issue.record("expected publish after recovery")
            return
        }
    }

    /// The issue-15 case: no `datacenters`, no `region_for_datacenter`. The local agent's
    /// instances are in this sidecar's region (probed at their own address), not in a region
    /// named after the datacenter (which sent the probe to the upstream instead).
    @Test func localAgentsDatacenterIsThisRegion() {
        var w = ConsulWatch(service: self.config.services[0], datacenter: nil, config: ConsulConfig(), localRegion: "a")
        guard
            case .publish(let targets, unmapped: []) = w.received(
                status: 200, indexHeader: "3", body: self.body([("g1", "10.0.0.1", "", 1)], datacenter: "dc1"))
        else {
            Issue.record("expected publish")
            return
        }
        #expect(targets.map(\.region) == ["a"])
        var probes = ProbeConfig()
        probes.consul = ConsulConfig()
        let request = ProbeRequest(
            hop: "h", region: "a", upstream: HostPort(host: "127.0.0.9", port: 9), config: probes)
        #expect(targets.map(request.address(for:)) == [HostPort(host: "10.0.0.1", port: 1)])
    }

    /// A listed datacenter with no mapping and no region of that name is left out, reported once
    /// while it stays; a datacenter named like a route_headers region is that region.
    @Test func unmappedDatacentersAreReportedOnceAndNotProbed() {
        var c = self.config
        c.regionForDatacenter = [:]
        var w = ConsulWatch(
            service: c.services[0], datacenter: "dc2", config: c, localRegion: "a", knownRegions: ["b"])
        #expect(w.region(ofDatacenter: "dc2") == nil)
        #expect(w.region(ofDatacenter: "b") == "b")
        #expect(w.region(ofDatacenter: "a") == "a")
        let one = self.body([("g1", "10.0.0.1", "", 1)])
        let expected = ConsulWatch.Unmapped(
            target: "gateway/g1", address: HostPort(host: "10.0.0.1", port: 1), datacenter: "dc2")
        #expect(w.received(status: 200, indexHeader: "3", body: one) == .publish([], unmapped: [expected]))
        // The same answer again: not reported again.
        #expect(w.received(status: 200, indexHeader: "4", body: one) == .unchanged)
        // A second instance: only it is new.
        let two = self.body([("g1", "10.0.0.1", "", 1), ("g2", "10.0.0.2", "", 2)])
        guard case .publish([], let unmapped) = w.received(status: 200, indexHeader: "5", body: two) else {
            Issue.record("expected publish")
            return
        }
        #expect(unmapped.map(\.target) == ["gateway/g2"])
        // Mapped (region_for_datacenter wins over everything).
        c.regionForDatacenter = ["dc2": "b"]
        var mapped = ConsulWatch(service: c.services[0], datacenter: "dc2", config: c, localRegion: "a")
        guard case .publish(let targets, unmapped: []) = mapped.received(status: 200, indexHeader: "3", body: one)
        else {
            Issue.record("expected publish")
            return
        }
        #expect(targets.map(\.region) == ["b"])
    }

    @Test func connectFailuresReadAsPlainWords() {
        let cause = "upstream 127.0.0.1:1 unreachable: connection refused"
        #expect(
            ProbeOutcome.connectFailure(to: HostPort(host: "127.0.0.1", port: 1), cause: cause)
                == "connect to 127.0.0.1:1 failed: connection refused")
        #expect(
            ProbeOutcome.connectFailure(to: HostPort(host: "h", port: 2), cause: "upstream h:2 unreachable: timed out")
                == "connect to h:2 failed: timed out")
    }
}
