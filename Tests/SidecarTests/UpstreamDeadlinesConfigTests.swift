import NIOCore
import Testing

@testable import Sidecar

/// `limits.upstream_wait_timeout` / `limits.upstream_idle_timeout`, and the addresses whose
/// pools the prober keeps.
@Suite struct UpstreamDeadlinesConfigTests {
    static let base = "upstream: 127.0.0.1:1\nhop: a\nregion: a\n"

    @Test func defaultsReachTheProxyConfiguration() throws {
        let c = try SidecarConfig.load(yaml: Self.base).validated()
        #expect(c.limits.upstreamWaitTimeout == .seconds(10))
        #expect(c.limits.upstreamIdleTimeout == .seconds(60))
        #expect(c.proxyConfiguration.upstreamWaitTimeout == .seconds(10))
        #expect(c.proxyConfiguration.upstreamIdleTimeout == .seconds(60))
    }

    @Test func yamlKeysAreRead() throws {
        let c = try SidecarConfig.load(
            yaml: Self.base + "limits: {upstream_wait_timeout: 750ms, upstream_idle_timeout: 2m}"
        ).validated()
        #expect(c.proxyConfiguration.upstreamWaitTimeout == .milliseconds(750))
        #expect(c.proxyConfiguration.upstreamIdleTimeout == .minutes(2))
    }

    @Test(arguments: [
        ("limits: {upstream_wait_timeout: 50ms}", "limits.upstream_wait_timeout"),
        ("limits: {upstream_wait_timeout: soon}", "limits.upstream_wait_timeout"),
        ("limits: {upstream_idle_timeout: 500ms}", "limits.upstream_idle_timeout"),
        ("limits: {upstream_idle_timeout: -1s}", "limits.upstream_idle_timeout"),
    ])
    func outOfRangeValuesNameTheField(yaml: String, field: String) {
        #expect {
            _ = try SidecarConfig.load(yaml: Self.base + yaml).validated()
        } throws: { error in
            (error as? ConfigError)?.field == field
        }
    }

    @Test func probePoolsAreKeyedByWhereProbesConnect() {
        var config = ProbeConfig()
        let local = ProbeTarget(name: "l", address: HostPort(host: "10.0.0.1", port: 50051), region: "a", kind: .health)
        let remote = ProbeTarget(name: "r", address: HostPort(host: "10.9.0.1", port: 50051), region: "b", kind: .echo)
        let upstream = HostPort(host: "127.0.0.1", port: 1)
        var r = ProbeRequest(hop: "a", region: "a", upstream: upstream, config: config)
        #expect(r.address(for: local) == local.address)
        #expect(r.address(for: remote) == upstream)
        #expect(r.make(for: remote, timeout: .seconds(1)).address == upstream)
        config.crossRegionUpstream = HostPort(host: "mediary", port: 8080)
        r = ProbeRequest(hop: "a", region: "a", upstream: upstream, config: config)
        #expect(r.address(for: remote) == HostPort(host: "mediary", port: 8080))
        #expect(r.make(for: local, timeout: .seconds(1)).address == local.address)
    }
}
