import NIOCore
import Testing

@testable import H2Proxy

/// The loop's queue of local-call timeouts, without a loop: calls added at rising times with a
/// few timeout amounts, a timer driven by `nextFiring`, and the invariants: every call comes out
/// once, never before its deadline, and at most `slack` after it.
@Suite struct LocalCallTimeoutsTests {
    static let slack = LocalCallTimeouts<Int>.slack

    @Test(arguments: SeededRandom.seeds(count: 32))
    func randomCallsTimeOutOnceNeverEarlyAndAtMostSlackLate(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        var queue = LocalCallTimeouts<Int>()
        let amounts: [TimeAmount] = [.milliseconds(300), .seconds(1), .milliseconds(50), .seconds(2)]
        var deadline: [Int: NIODeadline] = [:]
        var firedAt: [Int: NIODeadline] = [:]
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var next = 0
        // The timer as the loop arms it: at `nextFiring`, re-armed after each firing or add.
        var timer: NIODeadline?
        func fire(until end: NIODeadline) {
            while let at = timer, at <= end {
                now = at
                timer = nil
                for call in queue.removeDue(now: now) {
                    #expect(firedAt[call] == nil, "seed \(seed): call \(call) came out twice")
                    firedAt[call] = now
                }
                timer = queue.nextFiring
            }
            now = end
        }
        for _ in 0..<400 {
            // Time moves on by 0 to 30 ms; the timer fires on the way.
            fire(until: now + .microseconds(Int64.random(in: 0...30_000, using: &rng)))
            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                let timeout = amounts[Int.random(in: 0..<(seed % 2 == 0 ? 1 : amounts.count), using: &rng)]
                queue.add(next, now: now, timeout: timeout)
                deadline[next] = now + timeout
                next += 1
                if let at = queue.nextFiring, timer.map({ at < $0 }) ?? true { timer = at }
            }
        }
        fire(until: now + .seconds(3))
        #expect(queue.isEmpty && queue.nextFiring == nil, "seed \(seed)")
        #expect(firedAt.count == next, "seed \(seed): \(next - firedAt.count) calls never came out")
        for (call, at) in firedAt {
            let due = deadline[call]!
            #expect(
                at >= due, "seed \(seed): call \(call) out \(due.uptimeNanoseconds - at.uptimeNanoseconds) ns early")
            #expect(at <= due + Self.slack, "seed \(seed): call \(call) out \(at - due) late")
        }
    }

    /// Calls due within `slack` of the earliest share its firing.
    @Test func callsDueTogetherShareOneFiring() {
        var queue = LocalCallTimeouts<Int>()
        let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)
        for i in 0..<10 { queue.add(i, now: t0 + .milliseconds(Int64(i)), timeout: .seconds(1)) }
        let firing = queue.nextFiring
        #expect(firing == t0 + .seconds(1) + Self.slack)
        #expect(queue.removeDue(now: firing!) == Array(0..<10))
        #expect(queue.isEmpty)
    }

    /// A deadline before its queue's last one (the clock stepped back) is taken as that one.
    @Test func aClockThatStepsBackMakesACallLateNotEarly() {
        var queue = LocalCallTimeouts<Int>()
        let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)
        queue.add(1, now: t0, timeout: .seconds(1))
        queue.add(2, now: t0 - .milliseconds(500), timeout: .seconds(1))
        #expect(queue.removeDue(now: t0 + .milliseconds(600)) == [])
        #expect(queue.removeDue(now: t0 + .seconds(1)) == [1, 2])
    }

    /// Sweeping ended calls out keeps the order (and deadlines) of the rest.
    @Test func removingEndedCallsKeepsTheRestInOrder() {
        var queue = LocalCallTimeouts<Int>()
        let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)
        for i in 0..<20 {
            queue.add(i, now: t0 + .milliseconds(Int64(i)), timeout: i % 2 == 0 ? .seconds(1) : .seconds(2))
        }
        queue.removeAll { $0 % 3 == 0 }
        #expect(queue.count == 13)
        #expect(queue.removeDue(now: t0 + .seconds(1) + .milliseconds(9)) == [2, 4, 8])
        #expect(queue.removeDue(now: t0 + .seconds(5)) == [10, 14, 16, 1, 5, 7, 11, 13, 17, 19])
        queue.removeAll { _ in true }
        #expect(queue.isEmpty && queue.nextFiring == nil)
    }
}
