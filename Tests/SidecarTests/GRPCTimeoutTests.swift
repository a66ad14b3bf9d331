import H2Proxy
import Testing

@testable import Sidecar

@Suite struct GRPCTimeoutTests {
    @Test(
        arguments: [
            ("300m", 300_000_000), ("1H", 3_600_000_000_000), ("2M", 120_000_000_000), ("5S", 5_000_000_000),
            ("7u", 7000), ("99999999n", 99_999_999), ("0m", 0), ("99999999H", Int64.max),
        ] as [(String, Int64)])
    func validValues(text: String, nanos: Int64) {
        #expect(GRPCTimeout.nanoseconds(Array(text.utf8)) == nanos)
    }

    @Test(arguments: ["", "m", "300", "300ms", "3.5S", "-1S", "123456789m", "10s", " 1S"])
    func invalidValues(text: String) {
        #expect(GRPCTimeout.nanoseconds(Array(text.utf8)) == nil)
    }

    @Test func reachedAllowsTheEncodingSlack() {
        let ms: Int64 = 1_000_000
        #expect(GRPCTimeout.reached(elapsed: 300 * ms, timeout: 300 * ms))
        #expect(GRPCTimeout.reached(elapsed: 275 * ms, timeout: 300 * ms))
        #expect(!GRPCTimeout.reached(elapsed: 265 * ms, timeout: 300 * ms))
        #expect(!GRPCTimeout.reached(elapsed: 100 * ms, timeout: 300 * ms))
        #expect(GRPCTimeout.reached(elapsed: 920 * ms, timeout: 1000 * ms))
        #expect(!GRPCTimeout.reached(elapsed: 880 * ms, timeout: 1000 * ms))
        // The slack stops at 100 ms: a cancel 150 ms before a 30 s deadline stays a cancel.
        #expect(GRPCTimeout.reached(elapsed: 29_950 * ms, timeout: 30_000 * ms))
        #expect(!GRPCTimeout.reached(elapsed: 29_850 * ms, timeout: 30_000 * ms))
        // At least 20 ms, never more than the timeout itself.
        #expect(GRPCTimeout.reached(elapsed: 85 * ms, timeout: 100 * ms))
        #expect(GRPCTimeout.reached(elapsed: 0, timeout: 10 * ms))
    }

    /// What probes send: 8 digits at most (a strict peer refuses more), milliseconds while
    /// they fit, then the finest coarser unit, rounded up.
    @Test func encodedTimeoutsFollowTheGrammar() {
        #expect(GRPCTimeout.encode(nanoseconds: 300_000_000) == "300m")
        #expect(GRPCTimeout.encode(nanoseconds: 1_000) == "1m")
        #expect(GRPCTimeout.encode(nanoseconds: 99_999_999_000_000) == "99999999m")
        #expect(GRPCTimeout.encode(nanoseconds: 100_000_000_000_000) == "100000S")
        #expect(GRPCTimeout.encode(nanoseconds: 100_000_000_500_000) == "100001S")
        #expect(GRPCTimeout.encode(nanoseconds: 87_600 * 3_600_000_000_000) == "5256000M")
        #expect(GRPCTimeout.encode(nanoseconds: .max) == "2562048H")
        var rng = SeededRandom(seed: 2026)
        for _ in 0..<2000 {
            let nanos = Int64.random(in: 1_000_000...(10 * 365 * 24 * 3_600_000_000_000), using: &rng)
            let text = GRPCTimeout.encode(nanoseconds: nanos)
            let decoded = GRPCTimeout.nanoseconds(Array(text.utf8))
            #expect(decoded != nil, "\(nanos) -> \(text)")
            // Milliseconds are cut (as before), coarser units rounded up: within one unit.
            if let decoded { #expect(decoded > nanos - 1_000_000 && decoded < nanos + 3_600_000_000_000, "\(text)") }
        }
    }
}
