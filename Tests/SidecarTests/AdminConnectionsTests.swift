import Testing

@testable import Sidecar

/// ``AdminServer/Connections``: past the cap the oldest open connection is the one closed.
@Suite struct AdminConnectionsTests {
    final class Conn {}

    @Test func pastTheCapTheOldestIsClosed() {
        let conns = (0..<4).map { _ in Conn() }
        let ids = conns.map { ObjectIdentifier($0) }
        var c = AdminServer.Connections(maxConnections: 2)
        #expect(c.opened(ids[0]) == nil)
        #expect(c.opened(ids[1]) == nil)
        #expect(c.opened(ids[2]) == ids[0])
        c.closed(ids[1])
        #expect(c.opened(ids[3]) == nil)
        #expect(c.open == [ids[2], ids[3]])
    }
}
