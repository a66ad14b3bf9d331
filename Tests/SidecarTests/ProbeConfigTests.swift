import NIOCore
import NIOPosix
import Testing

@testable import Sidecar

@Suite struct ProbeConfigTests {
    @Test func probesSectionIsRead() throws {
        let c = try SidecarConfig.load(
            yaml: """
                upstream: 127.0.0.1:1
                hop: a
                region: a
                receiver: true
                probes:
                  interval: 2s
                  timeout: 300ms
                  max_concurrency: 8
                  cross_region_upstream: 127.0.0.1:2
                  route_headers: {b: {":authority": gw-b, x-region: b}}
                  targets:
                    - {name: gw, address: "127.0.0.1:3", region: b, kind: echo, interval: 500ms}
                  consul: {address: "127.0.0.1:8500", services: [{name: gateway, tag: x}], region_for_datacenter: {dc2: b}}
                """
        ).validated()
        #expect(c.receiver)
        #expect(c.probes.interval == .seconds(2))
        #expect(c.probes.targets.first?.kind == .echo)
        #expect(c.probes.targets.first?.interval == .milliseconds(500))
        #expect(c.probes.routeHeaders["b"]?.first == HeaderPair(name: ":authority", value: "gw-b"))
        #expect(c.probes.consul?.services.first?.tag == "x")
        let r = ProbeRequest(hop: "a", region: "a", upstream: HostPort(host: "127.0.0.1", port: 1), config: c.probes)
        let (address, headers, _) = r.make(for: c.probes.targets[0], timeout: .milliseconds(300))
        #expect(address == HostPort(host: "127.0.0.1", port: 2))
        #expect(headers.first(":authority") == "gw-b")
        #expect(headers.first("x-region") == "b")
        #expect(headers.first("grpc-timeout") == "300m")
        #expect(headers.first("insight-probe") == "echo")
    }

    @Test(arguments: [
        ("probes: {interval: 1ms}", "probes.interval"),
        ("probes: {targets: [{name: x, region: a}]}", "probes.targets[0].address"),
        ("probes: {targets: [{address: '1.2.3.4:5', region: a, kind: ping}]}", "probes.targets[0].kind"),
        ("probes: {bogus: 1}", "probes.bogus"),
        ("probes: {consul: {address: '127.0.0.1:1'}}", "probes.consul.services"),
    ])
    func invalidProbeConfigNamesTheField(yaml: String, field: String) {
        #expect {
            _ = try SidecarConfig.load(yaml: "upstream: 127.0.0.1:1\nhop: a\nregion: a\n" + yaml).validated()
        } throws: { error in
            (error as? ConfigError)?.field == field
        }
    }

    @Test func targetsFileFormats() throws {
        let yaml = try TargetDiscovery.parseTargetsFile("- {name: a, address: '127.0.0.1:1', region: a}\n")
        let json = try TargetDiscovery.parseTargetsFile(
            #"{"targets": [{"name": "b", "address": "127.0.0.1:2", "region": "b", "kind": "echo"}]}"#)
        #expect(yaml.map(\.name) == ["a"])
        #expect(json.map(\.kind) == [.echo])
        #expect(json.first?.source == "file")
        #expect(throws: ConfigError.self) { _ = try TargetDiscovery.parseTargetsFile("{nope: 1}") }
    }
}
