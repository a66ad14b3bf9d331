import Metrics
import NIOCore
import Testing

@testable import Sidecar

@Suite struct SidecarConfigTests {
    @Test func yamlFileIsRead() throws {
        let c = try SidecarConfig.load(
            yaml: """
                listen: 127.0.0.1:7000
                upstream: "[::1]:7001"
                hop: mediary-a
                region: eu-west
                admin: 127.0.0.1:7002
                event_loops: 3
                drain_timeout: 1500ms
                log_level: debug
                limits:
                  max_concurrent_streams: 50
                  max_header_list_size: 32768
                """
        ).validated()
        #expect(c.listen == HostPort(host: "127.0.0.1", port: 7000))
        #expect(c.upstream == HostPort(host: "::1", port: 7001))
        #expect(c.hop == "mediary-a")
        #expect(c.eventLoops == 3)
        #expect(c.drainTimeout == .milliseconds(1500))
        #expect(c.limits.maxConcurrentStreams == 50)
        #expect(c.proxyConfiguration.downstreamSession.maxConcurrentStreams == 50)
        #expect(c.proxyConfiguration.upstreamSession.maxHeaderListSize == 32768)
    }

    @Test(arguments: [
        ("upstream: nohost\nhop: a\nregion: b", "upstream"),
        ("upstream: 127.0.0.1:99999\nhop: a\nregion: b", "upstream"),
        ("upstream: 127.0.0.1:1\nregion: b", "hop"),
        ("upstream: 127.0.0.1:1\nhop: a", "region"),
        ("upstream: 127.0.0.1:1\nhop: 'a b'\nregion: b", "hop"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nevent_loops: many", "event_loops"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\ndrain_timeout: soon", "drain_timeout"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\ndrain_timeout: 99999999999s", "drain_timeout"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nlimits: {idle_timeout: 1e20s}", "limits.idle_timeout"),
        (
            "upstream: 127.0.0.1:1\nhop: a\nregion: b\nlimits:\n  max_concurrent_streams: 0",
            "limits.max_concurrent_streams"
        ),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nlimits:\n  bogus: 1", "limits.bogus"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nlisten_port: 1", "listen_port"),
        ("upstream: [unclosed", "config"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nlog_level: loud", "log_level"),
        // Found by the config fuzzer: deep flow nesting overflowed libyaml's stack.
        ("x:\n" + String(repeating: "{", count: 5000), "config"),
        ("x: \"{{{{\"\n" + String(repeating: "[", count: 65), "config"),
        ("x:\n" + String(repeating: "- ", count: 200) + "y", "config"),
        ("x:\n" + String(repeating: " ", count: 300) + "y: 1", "config"),
        // Zero would fail every connect at once.
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nconnect_timeout: 0", "connect_timeout"),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nconnect_timeout: 0ms", "connect_timeout"),
        // Duplicate keys: the parser keeps the last one, so the first would vanish silently.
        (
            "upstream: 127.0.0.1:1\nhop: a\nregion: b\nlimits:\n  max_connections: 5\nlimits:\n  idle_timeout: 5s",
            "limits"
        ),
        ("upstream: 127.0.0.1:1\nhop: a\nregion: b\nhop: c", "hop"),
        (
            "upstream: 127.0.0.1:1\nhop: a\nregion: b\nlimits:\n  max_connections: 5\n  max_connections: 6",
            "limits.max_connections"
        ),
        (
            "upstream: 127.0.0.1:1\nhop: a\nregion: b\nprobes:\n  targets:\n  - {address: '1.2.3.4:5', region: a, region: b}",
            "probes.targets[0].region"
        ),
    ])
    func invalidConfigNamesTheField(yaml: String, field: String) {
        #expect {
            _ = try SidecarConfig.load(yaml: yaml).validated()
        } throws: { error in
            (error as? ConfigError)?.field == field
        }
    }

    @Test func connectTimeoutFlagMustBePositive() throws {
        let options = try ConfigOptions.parse([
            "--upstream", "127.0.0.1:5", "--hop", "h", "--region", "r", "--connect-timeout", "0",
        ])
        #expect(throws: ConfigError(field: "connect_timeout", reason: "must be more than 0, got \"0\"")) {
            _ = try options.resolve()
        }
    }

    /// `-1` is a value, not an unknown flag: the range check explains it.
    @Test func negativeEventLoopsReachTheRangeCheck() throws {
        let options = try ConfigOptions.parse([
            "--upstream", "127.0.0.1:5", "--hop", "h", "--region", "r", "--event-loops", "-1",
        ])
        #expect(throws: ConfigError(field: "event_loops", reason: "must be 0 (one per core) to 256, got -1")) {
            _ = try options.resolve()
        }
    }

    @Test func aDirectoryAsConfigIsNamedInPlainWords() throws {
        let options = try ConfigOptions.parse(["--config", "/tmp"])
        #expect(throws: ConfigError(field: "config", reason: "cannot read /tmp: it is a directory, not a file")) {
            _ = try options.resolve()
        }
    }

    @Test func targetsFileDuplicateKeysAreRejected() {
        #expect(throws: ConfigError.self) {
            _ = try TargetDiscovery.parseTargetsFile("- {address: '1.2.3.4:5', region: a, name: x, name: y}")
        }
    }

    @Test func flagsOverrideFile() throws {
        let options = try ConfigOptions.parse([
            "--upstream", "127.0.0.1:5", "--hop", "h", "--region", "r", "--drain-timeout", "2s",
        ])
        let c = try options.resolve()
        #expect(c.upstream?.port == 5)
        #expect(c.drainTimeout == .seconds(2))
        #expect(c.listen == HostPort(host: "0.0.0.0", port: 8080))
    }

    @Test func removedSeriesLeaveTheExposition() {
        let registry = MetricsRegistry()
        let probes = ProbeMetrics(registry: registry, hop: "h", region: "a")
        probes.target(name: "gone", targetRegion: "b", kind: "health").result("success", code: "OK").increment()
        probes.target(name: "kept", targetRegion: "b", kind: "health").up.set(1)
        probes.removeTarget(name: "gone", targetRegion: "b", kind: "health")
        let text = registry.render()
        #expect(!text.contains("target=\"gone\""))
        #expect(text.contains("insight_probe_up{hop=\"h\",region=\"a\",target=\"kept\""))
    }

    @Test func prometheusTextFormat() {
        let registry = MetricsRegistry()
        let a = registry.counter("x_total", help: "X.", labels: [("side", "a\"b")])
        a.increment(by: 3)
        let h = registry.histogram("lat_seconds", help: "L.", buckets: [0.1, 1])
        h.observe(0.05)
        h.observe(0.5)
        h.observe(5)
        let text = registry.render()
        #expect(text.contains("# TYPE x_total counter\nx_total{side=\"a\\\"b\"} 3\n"))
        #expect(text.contains("lat_seconds_bucket{le=\"0.1\"} 1\n"))
        #expect(text.contains("lat_seconds_bucket{le=\"1.0\"} 2\n"))
        #expect(text.contains("lat_seconds_bucket{le=\"+Inf\"} 3\n"))
        #expect(text.contains("lat_seconds_count 3\n"))
    }
}
