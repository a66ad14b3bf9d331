import Foundation
import Testing

@testable import Sidecar

/// Replays generated sample streams (step, ramp, noise only, a single outlier) through
/// ``Diagnosis/analyze(samples:now:window:baselineSpan:)`` as the admin API would call it, every
/// fraction of a second, and checks the verdicts and the time to blame. Streams come from a
/// seeded generator; every failure names its seed.
@Suite struct DiagnosisReplayTests {
    /// SplitMix64: a small, fixed generator, so that a seed replays the same stream anywhere.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }

        /// A standard normal value (Box–Muller).
        mutating func gaussian() -> Double {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
            let u2 = Double.random(in: 0..<1, using: &self)
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }

    /// Three seeds, each replay a few seconds of CPU in a debug build.
    static let seeds: [UInt64] = [1, 2, 3]

    /// The replays are skipped under the sanitizers (`make sanitize` sets `INSIGHT_SANITIZER`):
    /// they are safe, single-threaded Swift arithmetic on arrays, nothing AddressSanitizer or
    /// ThreadSanitizer looks for, and even with one seed they took 4.8 minutes of the ASan run
    /// and 6.3 of the TSan run (every other test had ended long before). `make test` runs them.
    static let heavyReplay = Testing.ConditionTrait.enabled(
        if: ProcessInfo.processInfo.environment["INSIGHT_SANITIZER"] == nil,
        "replays are pure arithmetic: skipped under the sanitizers")

    /// The demo's chain: the WAN segment (61 ms at the default 30 ms each way), a loopback hop,
    /// the service. `wan(t, &rng)` gives the WAN segment of the call ending at `t`.
    static func stream(
        seed: UInt64, rate: Double, until end: Double, wan: (Double, inout SeededGenerator) -> Double
    ) -> [StreamSample] {
        var rng = SeededGenerator(state: seed)
        var samples: [StreamSample] = []
        var t = 0.0
        while t < end {
            let w = wan(t, &rng)
            let service = 5 + abs(rng.gaussian()) * 0.3
            samples.append(
                StreamSample(
                    time: t, service: "insight.demo.v1.Demo", method: "Unary", isProbe: false, code: "OK",
                    duration: w + service + 1, selfTime: 0.1,
                    segments: [
                        .init(hop: "mediary-a", next: "mediary-b", milliseconds: w),
                        .init(hop: "mediary-b", next: "gateway-b", milliseconds: 0.8 + abs(rng.gaussian()) * 0.2),
                        .init(hop: "gateway-b", next: "service", milliseconds: service),
                    ], failure: nil))
            t += 1 / rate
        }
        return samples
    }

    /// Loopback-like WAN noise around `ms`: mostly within a few percent, 2 % of calls twice as slow.
    static func noisy(_ ms: Double, _ rng: inout SeededGenerator) -> Double {
        let base = ms * exp(0.04 * rng.gaussian())
        return Double.random(in: 0..<1, using: &rng) < 0.02 ? 2 * base : base
    }

    /// Diagnoses at `from`, `from + every`, … up to `to` with the samples ended by then; the
    /// verdicts (of the single path) in that order. It yields after each diagnosis: these replays
    /// are the heaviest CPU work in the unit tests, and a test that held a thread of the
    /// cooperative pool (two on this machine) for seconds stalled the async tests that ran beside
    /// it (a 300 ms exporter stop took 88 s under the sanitizers).
    static func replay(_ samples: [StreamSample], from: Double, to: Double, every: Double, window: Double) async
        -> [(time: Double, verdict: Diagnosis.PathVerdict)]
    {
        var out: [(Double, Diagnosis.PathVerdict)] = []
        var now = from
        var end = 0
        while now <= to {
            while end < samples.count && samples[end].time <= now { end += 1 }
            let verdicts = Diagnosis.analyze(samples: Array(samples[..<end]), now: now, window: window)
            out.append((now, verdicts[0]))
            now += every
            await Task.yield()
        }
        return out
    }

    @Test(Self.heavyReplay, arguments: [30.0, 8.0])
    func aStepOfHundredMillisecondsIsBlamedWithinFiveSeconds(window: Double) async throws {
        let step = 45.0
        for seed in Self.seeds {
            let samples = Self.stream(seed: seed, rate: 50, until: step + 10) { t, rng in
                Self.noisy(t < step ? 61 : 161, &rng)
            }
            let verdicts = await Self.replay(samples, from: step - 5, to: step + 6, every: 0.25, window: window)
            let early = verdicts.filter { $0.time < step && $0.verdict.blame != nil }
            #expect(early.isEmpty, "seed \(seed): blamed before the step: \(early.map(\.verdict.verdict))")
            let first = try #require(
                verdicts.first { $0.time >= step && $0.verdict.blame != nil }, "seed \(seed): never blamed")
            let blame = try #require(first.verdict.blame)
            print("window \(window) s, seed \(seed): +100 ms step blamed after \(first.time - step) s")
            #expect(first.time - step <= 5, "seed \(seed): blamed only after \(first.time - step) s")
            #expect(blame.segment == "mediary-a" && blame.next == "mediary-b", "seed \(seed)")
            #expect(abs(blame.deltaP50 - 100) < 15, "seed \(seed): \(blame)")
            #expect(abs(blame.shift - 100) < 15, "seed \(seed): \(blame)")
            #expect(blame.confidence >= 0.999 && blame.moved, "seed \(seed): \(blame)")
            #expect(first.verdict.segments.filter(\.moved).count == 1, "seed \(seed): \(first.verdict.segments)")
            #expect(first.verdict.verdict.hasPrefix("segment mediary-a moved +"), "seed \(seed)")
            // And it stays blamed.
            let later = verdicts.filter { $0.time >= first.time }
            #expect(later.allSatisfy { $0.verdict.blame?.segment == "mediary-a" }, "seed \(seed)")
        }
    }

    /// 1 ms/s from t = 60 s: blamed once the rise is worth it (20 % of 61 ms, about 12 ms, at
    /// the p50 of the span), not before, and well before it reaches 40 ms.
    @Test(Self.heavyReplay) func aRampIsBlamedOnceItMatters() async throws {
        let start = 45.0
        for seed in Self.seeds {
            let samples = Self.stream(seed: seed, rate: 50, until: start + 45) { t, rng in
                Self.noisy(61 + max(0, t - start), &rng)
            }
            let verdicts = await Self.replay(samples, from: start, to: start + 45, every: 1, window: 30)
            let first = try #require(verdicts.first { $0.verdict.blame != nil }, "seed \(seed): never blamed")
            print("seed \(seed): ramp blamed after \(first.time - start) s")
            #expect(first.time - start >= 12, "seed \(seed): blamed at +\(first.time - start) ms of ramp")
            #expect(first.time - start <= 40, "seed \(seed): blamed only at +\(first.time - start) ms of ramp")
            #expect(first.verdict.blame?.segment == "mediary-a", "seed \(seed)")
        }
    }

    @Test(Self.heavyReplay) func noiseAloneBlamesNobody() async {
        for seed in Self.seeds {
            let samples = Self.stream(seed: seed, rate: 50, until: 150) { _, rng in Self.noisy(61, &rng) }
            let verdicts = await Self.replay(samples, from: 40, to: 150, every: 2, window: 30)
            let blamed = verdicts.filter { $0.verdict.blame != nil }
            #expect(blamed.isEmpty, "seed \(seed): \(blamed.map { "t=\($0.time): \($0.verdict.verdict)" })")
            #expect(verdicts.allSatisfy { $0.verdict.verdict == "no segment moved" }, "seed \(seed)")
        }
    }

    /// One 5 s call among steady ones, at the traffic rate and at a probe's rate (1/s).
    @Test(Self.heavyReplay, arguments: [50.0, 1.0])
    func aSingleOutlierBlamesNobody(rate: Double) async {
        let at = 60.0
        for seed in Self.seeds {
            var samples = Self.stream(seed: seed, rate: rate, until: at + 30) { _, rng in Self.noisy(61, &rng) }
            let i = samples.firstIndex { $0.time >= at }!
            samples[i].segments[0].milliseconds = 5000
            let verdicts = await Self.replay(samples, from: at, to: at + 30, every: 1, window: 30)
            let blamed = verdicts.filter { $0.verdict.blame != nil }
            #expect(blamed.isEmpty, "seed \(seed): \(blamed.map { "t=\($0.time): \($0.verdict.verdict)" })")
        }
    }

    /// A shift that is real (thousands of samples make it significant) but too small to matter.
    @Test(Self.heavyReplay) func aSignificantButSmallShiftIsNotBlamed() async throws {
        let samples = Self.stream(seed: 7, rate: 50, until: 120) { t, rng in Self.noisy(t < 60 ? 61 : 62.5, &rng) }
        let verdicts = await Self.replay(samples, from: 60, to: 120, every: 2, window: 30)
        #expect(verdicts.allSatisfy { $0.verdict.blame == nil })
        let wan = try #require(verdicts.last?.verdict.segments.first)
        #expect(wan.pValue < 0.001 && wan.deltaP50 > 0.5 && wan.deltaP50 < 2, "\(wan)")
    }

    @Test func spansHalveDownToTwoSeconds() {
        #expect(Diagnosis.spans(window: 30) == [30, 15, 7.5, 3.75])
        #expect(Diagnosis.spans(window: 8) == [8, 4, 2])
        #expect(Diagnosis.spans(window: 1) == [1])
    }

    /// Values checked against `scipy.stats.mannwhitneyu(recent, baseline, alternative="greater",
    /// method="asymptotic", use_continuity=True)`.
    @Test func mannWhitneyMatchesSciPy() {
        func check(_ recent: [Double], _ baseline: [Double], u: Double, p: Double) {
            let t = MannWhitneyTest(sortedRecent: recent.sorted(), sortedBaseline: baseline.sorted())
            #expect(t.u == u)
            #expect(abs(t.pValue - p) < 1e-9 * max(1, p), "\(t.pValue) vs \(p)")
            #expect(t.superiority == u / Double(recent.count * baseline.count))
        }
        check([3, 4, 5, 6, 7], [1, 2, 3, 4, 5], u: 20.5, p: 0.056923149003329024)
        check([1, 2, 2, 3, 9], [1, 1, 2, 2, 2, 3], u: 19.5, p: 0.21896327708549163)
        check([10, 11, 12, 13, 14, 15, 16, 17], [1, 2, 3, 4, 5, 6, 7, 8, 9], u: 72, p: 0.00031775396212345625)
        #expect(MannWhitneyTest(sortedRecent: [], sortedBaseline: [1]).pValue == 1)
        #expect(MannWhitneyTest(sortedRecent: [2, 2], sortedBaseline: [2, 2, 2]).pValue == 1)
    }

    /// The shift estimate against a brute-force median of all pairwise differences, and on a
    /// step whose span still holds 36 % old samples.
    @Test func hodgesLehmannIsTheMedianOfPairwiseDifferences() {
        var random = SeededRandom(seed: 7)
        for _ in 0..<50 {
            let r = (0..<Int.random(in: 5...40, using: &random)).map { _ in Double.random(in: 0...100, using: &random) }
                .sorted()
            let b = (0..<Int.random(in: 5...40, using: &random)).map { _ in Double.random(in: 0...100, using: &random) }
                .sorted()
            let all = r.flatMap { x in b.map { x - $0 } }.sorted()
            // The smallest d with at least half the pairs ≤ d: the lower median of the differences.
            let lowerMedian = all[(all.count + 1) / 2 - 1]
            #expect(abs(Diagnosis.hodgesLehmann(sortedRecent: r, sortedBaseline: b) - lowerMedian) < 1e-3)
        }
        func level(_ base: Double, _ count: Int) -> [Double] {
            (0..<count).map { (i: Int) -> Double in base + Double(i % 10) * 0.2 }
        }
        let baseline = level(60, 200)
        let recent = (level(60, 36) + level(160, 64)).sorted()
        #expect(abs(Diagnosis.hodgesLehmann(sortedRecent: recent, sortedBaseline: baseline) - 100) < 2)
        #expect(Diagnosis.percentile(sorted: recent, 0.5) - Diagnosis.percentile(sorted: baseline, 0.5) > 95)
    }
}
