import Metrics
import NIOCore
import Testing

@testable import Sidecar

@Suite struct LimitsTests {
    @Test func connectionLimitsAreRead() throws {
        let c = try SidecarConfig.load(
            yaml: """
                upstream: 127.0.0.1:1
                hop: a
                region: a
                limits: {max_connections: 5, idle_timeout: 2s, preface_timeout: 500ms, max_connection_age: 1m,
                         handshake_timeout: 3s}
                """
        ).validated()
        let p = c.proxyConfiguration
        #expect(p.maxConnections == 5)
        #expect(p.idleTimeout == .seconds(2))
        #expect(p.prefaceTimeout == .milliseconds(500))
        #expect(p.maxConnectionAge == .minutes(1))
        #expect(c.limits.handshakeTimeout == .seconds(3))
    }
}
