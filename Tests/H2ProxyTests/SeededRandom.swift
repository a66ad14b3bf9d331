import Foundation

/// SplitMix64: small, fast, and the same sequence for the same seed on every platform, so a
/// random test that fails can be replayed from the seed it prints.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The seeds a random test runs: `1...count`, or only `INSIGHT_TEST_SEED` when it is set
    /// (`INSIGHT_TEST_SEED=N swift test --filter <test>` replays the seed a failure printed).
    static func seeds(count: UInt64) -> ClosedRange<UInt64> {
        if let text = ProcessInfo.processInfo.environment["INSIGHT_TEST_SEED"], let seed = UInt64(text) {
            return seed...seed
        }
        return 1...count
    }
}
