import Foundation
import Logging
import Metrics
import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

@Suite struct TLSStateMachineTests {
    typealias Machine = TLSHandler.StateMachine

    @Test func portProbeIsNotAFailure() {
        var m = Machine(isClient: false)
        #expect(m.channelActive() == .startHandshake)
        #expect(m.channelInactive() == .none)
    }

    @Test func closeMidHandshakeIsTruncated() {
        var m = Machine(isClient: false)
        _ = m.channelActive()
        m.bytesReceived()
        guard case .fail(let f) = m.channelInactive() else {
            Issue.record("no failure")
            return
        }
        #expect(f.reason == .truncated)
    }

    @Test func writesBufferUntilH2IsAgreed() {
        var m = Machine(isClient: true)
        _ = m.channelActive()
        #expect(m.write() == .buffer)
        #expect(m.handshakeCompleted(negotiatedProtocol: "h2") == .flushBufferedWrites)
        #expect(m.write() == .encrypt)
    }

    @Test func anotherProtocolFails() {
        var m = Machine(isClient: true)
        _ = m.channelActive()
        guard case .fail(let f) = m.handshakeCompleted(negotiatedProtocol: nil) else {
            Issue.record("accepted no ALPN")
            return
        }
        #expect(f.reason == .noApplicationProtocol)
        #expect(m.write() == .drop)
    }

    @Test func upstreamClosingBeforeSettingsCounts() {
        var m = Machine(isClient: true)
        _ = m.channelActive()
        _ = m.handshakeCompleted(negotiatedProtocol: "h2")
        guard case .fail(let f) = m.channelInactive() else {
            Issue.record("not counted")
            return
        }
        #expect(f.reason == .truncated)
        var n = Machine(isClient: true)
        _ = n.channelActive()
        _ = n.handshakeCompleted(negotiatedProtocol: "h2")
        n.dataReceived()
        #expect(n.channelInactive() == .none)
    }
}
