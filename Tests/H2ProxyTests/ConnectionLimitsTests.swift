import NIOCore
import Testing

@testable import H2Proxy

@Suite struct ConnectionLimitsTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func configuration() -> ProxyConfiguration {
        var c = ProxyConfiguration(listenHost: "127.0.0.1", listenPort: 0, upstreamHost: "127.0.0.1", upstreamPort: 1)
        c.prefaceTimeout = .seconds(2)
        c.idleTimeout = .seconds(10)
        c.maxConnectionAge = .seconds(60)
        return c
    }

    @Test func prefaceTimeoutClosesSilentConnections() {
        var l = DownstreamConnection.Limits(now: self.t0)
        #expect(l.check(now: self.t0 + .seconds(1), openStreams: 0, configuration: self.configuration()) == .none)
        #expect(
            l.check(now: self.t0 + .seconds(2), openStreams: 0, configuration: self.configuration())
                == .closePrefaceTimeout)
    }

    @Test func idleTimeoutCountsFromTheLastStream() {
        var l = DownstreamConnection.Limits(now: self.t0)
        l.prefaceDone = true
        #expect(l.check(now: self.t0 + .seconds(8), openStreams: 3, configuration: self.configuration()) == .none)
        #expect(l.check(now: self.t0 + .seconds(17), openStreams: 0, configuration: self.configuration()) == .none)
        #expect(
            l.check(now: self.t0 + .seconds(18), openStreams: 0, configuration: self.configuration()) == .goAwayIdle)
        // Once GOAWAY started, nothing more.
        #expect(l.check(now: self.t0 + .seconds(70), openStreams: 0, configuration: self.configuration()) == .none)
    }

    @Test func maxAgeSendsGoAwayEvenWhenBusy() {
        var l = DownstreamConnection.Limits(now: self.t0)
        l.prefaceDone = true
        #expect(
            l.check(now: self.t0 + .seconds(60), openStreams: 5, configuration: self.configuration()) == .goAwayMaxAge)
    }
}
