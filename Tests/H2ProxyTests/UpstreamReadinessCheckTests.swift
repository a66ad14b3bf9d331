import Testing

@testable import H2Proxy

/// The readiness check's state machine, without channels: one check at a time, shared answers.
@Suite struct UpstreamReadinessCheckTests {
    final class Connection {}
    typealias Check = UpstreamPool.ReadinessCheck<Connection, Int>

    static func finished(_ action: Check.Action) -> ([Int], UpstreamReadiness)? {
        if case .finish(let waiters, let answer) = action { return (waiters, answer) }
        return nil
    }

    @Test func concurrentCallersShareOneCheckAndOneAnswer() {
        var check = Check()
        let c = Connection()
        guard case .start = check.begin(1) else {
            Issue.record("first caller starts")
            return
        }
        guard case .none = check.begin(2) else {
            Issue.record("second caller joins")
            return
        }
        check.probing(c, ack: 3)
        #expect(Self.finished(check.acknowledged(c, acks: 2, detail: "ok")) == nil)
        let done = Self.finished(check.acknowledged(c, acks: 3, detail: "ok"))
        #expect(done?.0 == [1, 2])
        #expect(done?.1 == UpstreamReadiness(isReady: true, detail: "ok"))
        #expect(!check.isRunning)
        guard case .start = check.begin(3) else {
            Issue.record("a new check after the answer")
            return
        }
    }

    @Test func waitsForAConnectionThenProbesIt() {
        var check = Check()
        let c = Connection()
        _ = check.begin(1)
        check.awaitConnection()
        #expect(check.wantsConnection)
        guard case .probe(let probed) = check.connectionReady(c), probed === c else {
            Issue.record("probe the new connection")
            return
        }
        check.probing(c, ack: 2)
        #expect(!check.wantsConnection)
        #expect(Self.finished(check.acknowledged(c, acks: 2, detail: "ok"))?.1.isReady == true)
    }

    @Test func connectionFailureBeforeReadyFailsTheCheckWithItsCause() {
        var check = Check()
        _ = check.begin(1)
        check.awaitConnection()
        let done = Self.finished(
            check.connectionFailed(Connection(), beforeReady: true, cause: "TLS handshake failed (cert_expired)"))
        #expect(done?.1 == UpstreamReadiness(isReady: false, detail: "TLS handshake failed (cert_expired)"))
    }

    @Test func anotherConnectionClosingDoesNotEndAProbe() {
        var check = Check()
        let probed = Connection()
        _ = check.begin(1)
        check.probing(probed, ack: 2)
        #expect(Self.finished(check.connectionFailed(Connection(), beforeReady: false, cause: "x")) == nil)
        #expect(Self.finished(check.acknowledged(Connection(), acks: 9, detail: "ok")) == nil)
        let done = Self.finished(check.connectionFailed(probed, beforeReady: false, cause: "closed"))
        #expect(done?.1.isReady == false)
        #expect(done?.1.detail.contains("closed") == true)
    }

    @Test func deadlineSaysWhatWasAwaited() {
        var check = Check()
        #expect(Self.finished(check.deadlinePassed(upstream: "u:1", deadline: "1s")) == nil)
        _ = check.begin(1)
        check.awaitConnection()
        #expect(
            Self.finished(check.deadlinePassed(upstream: "u:1", deadline: "1s"))?.1.detail.contains(
                "did not complete the connection") == true)
        _ = check.begin(2)
        check.probing(Connection(), ack: 2)
        let done = Self.finished(check.deadlinePassed(upstream: "u:1", deadline: "1s"))
        #expect(done?.0 == [2])
        #expect(done?.1.detail.contains("did not acknowledge an HTTP/2 SETTINGS frame within 1s") == true)
    }
}
