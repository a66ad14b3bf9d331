import NIOCore
import NIOHTTP1
import Testing

@testable import Sidecar

/// ``AdminHandler/StateMachine``: one request answered at a time, a request read while the channel
/// is not writable held until it is, and the idle clock.
@Suite struct AdminHandlerStateMachineTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/metrics")

    static func isAnswer(_ action: AdminHandler.StateMachine.Action) -> Bool {
        if case .answer = action { return true }
        return false
    }

    @Test func answersAtOnceWhenWritableAndHoldsWhenNot() {
        var m = AdminHandler.StateMachine(idleTimeout: .seconds(30), now: Self.t0)
        #expect(Self.isAnswer(m.requestReceived(Self.head, now: Self.t0, writable: true)))
        m.responseStarted(now: Self.t0)
        // The pipeline handler delivers the next request inside the write of the response's end.
        guard case .none = m.requestReceived(Self.head, now: Self.t0, writable: true) else {
            Issue.record("a request read while a response is written must be held")
            return
        }
        // The send buffer is over its high-water mark: nothing is answered until it drains.
        guard case .none = m.responseFlushed(writable: false) else {
            Issue.record("must not answer while not writable")
            return
        }
        guard case .none = m.resume(writable: false) else {
            Issue.record("must not answer while not writable")
            return
        }
        #expect(Self.isAnswer(m.resume(writable: true)))
        guard case .none = m.resume(writable: true) else {
            Issue.record("a held request is answered once")
            return
        }
    }

    @Test func heldRequestOnAWritableChannelResumesOnALaterTick() {
        var m = AdminHandler.StateMachine(idleTimeout: .seconds(30), now: Self.t0)
        _ = m.requestReceived(Self.head, now: Self.t0, writable: true)
        _ = m.requestReceived(Self.head, now: Self.t0, writable: true)
        guard case .resumeLater = m.responseFlushed(writable: true) else {
            Issue.record("expected resumeLater")
            return
        }
        #expect(Self.isAnswer(m.resume(writable: true)))
    }

    @Test func aSecondHeldRequestClosesTheConnection() {
        var m = AdminHandler.StateMachine(idleTimeout: .seconds(30), now: Self.t0)
        _ = m.requestReceived(Self.head, now: Self.t0, writable: false)
        guard case .close = m.requestReceived(Self.head, now: Self.t0, writable: false) else {
            Issue.record("expected close")
            return
        }
    }

    @Test func idleClockCountsFromLastProgressAndNotWhileAnswering() {
        var m = AdminHandler.StateMachine(idleTimeout: .seconds(30), now: Self.t0)
        guard case .close = m.timerFired(now: Self.t0 + .seconds(30)) else {
            Issue.record("an idle connection closes after the timeout")
            return
        }
        _ = m.requestReceived(Self.head, now: Self.t0 + .seconds(10), writable: true)
        // Computing the response: the clock does not run.
        guard case .rearm(let next) = m.timerFired(now: Self.t0 + .seconds(100)) else {
            Issue.record("expected rearm while answering")
            return
        }
        #expect(next == Self.t0 + .seconds(130))
        m.responseStarted(now: Self.t0 + .seconds(100))
        _ = m.responseFlushed(writable: true)
        guard case .rearm(let deadline) = m.timerFired(now: Self.t0 + .seconds(110)) else {
            Issue.record("expected rearm")
            return
        }
        #expect(deadline == Self.t0 + .seconds(130))
        m.responseSent(now: Self.t0 + .seconds(120))
        guard case .close = m.timerFired(now: Self.t0 + .seconds(150)) else {
            Issue.record("expected close 30 s after the response was sent")
            return
        }
    }
}
