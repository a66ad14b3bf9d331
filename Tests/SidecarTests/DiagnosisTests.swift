import Foundation
import Testing

@testable import Sidecar

@Suite struct DiagnosisTests {
    func sample(at t: Double, wan: Double, service: Double, code: String = "OK", failure: String? = nil) -> StreamSample
    {
        StreamSample(
            time: t, service: "demo.Svc", method: "Call", isProbe: false, code: code, duration: wan + service + 2,
            selfTime: 0.1,
            segments: [
                .init(hop: "mediary-a", next: "mediary-b", milliseconds: wan),
                .init(hop: "mediary-b", next: "gateway-b", milliseconds: 1),
                .init(hop: "gateway-b", next: "service", milliseconds: service),
            ], failure: failure)
    }

    func run(wanAfter: Double, serviceAfter: Double) -> Diagnosis.PathVerdict {
        var samples: [StreamSample] = []
        for i in 0..<100 {
            let jitter = Double(i % 7) * 0.3
            samples.append(self.sample(at: Double(i), wan: 60 + jitter, service: 5 + jitter / 3))
        }
        for i in 100..<130 {
            let jitter = Double(i % 5) * 0.3
            samples.append(self.sample(at: Double(i), wan: wanAfter + jitter, service: serviceAfter + jitter / 3))
        }
        let verdicts = Diagnosis.analyze(samples: samples, now: 130, window: 30)
        return verdicts[0]
    }

    @Test func aMoveIsMeasuredOnTheSamplesAfterTheChange() {
        // 20 samples at ~60 ms, then 12 at ~160 ms: over all 32 the shift reads about half the step.
        var samples: [(time: Double, ms: Double)] = []
        for i in 0..<20 { samples.append((Double(i) * 0.1, 60 + Double(i % 7) * 0.3)) }
        for i in 20..<32 { samples.append((Double(i) * 0.1, 160 + Double(i % 5) * 0.3)) }
        let baseline = (0..<100).map { 60 + Double($0 % 7) * 0.3 }.sorted()
        let all = Diagnosis.hodgesLehmann(sortedRecent: samples.map(\.ms).sorted(), sortedBaseline: baseline)
        #expect(all < 20)
        let after = Diagnosis.sinceChange(samples.shuffled())
        #expect(after.count == 12)
        let shift = Diagnosis.hodgesLehmann(sortedRecent: after, sortedBaseline: baseline)
        #expect(abs(shift - 100) < 2, "shift \(shift)")
        // No change inside the samples: all of them.
        #expect(Diagnosis.sinceChange(Array(samples[20...])).count >= 5)
    }

    @Test func slowerWANBlamesTheHopBeforeIt() throws {
        let v = self.run(wanAfter: 160, serviceAfter: 5)
        let blame = try #require(v.blame)
        #expect(blame.segment == "mediary-a")
        #expect(abs(blame.deltaP50 - 100) < 2)
        #expect(blame.confidence > 0.9)
        #expect(v.verdict.contains("mediary-a"))
    }

    @Test func slowerServiceBlamesTheServiceSegment() throws {
        let v = self.run(wanAfter: 60, serviceAfter: 45)
        let blame = try #require(v.blame)
        #expect(blame.segment == "gateway-b")
        #expect(blame.next == "service")
    }

    /// A step change that has already spilled into the baseline (a third of it here) is still
    /// blamed: the baseline's median and MAD have not moved.
    @Test func aLastingChangeStaysBlamed() throws {
        var samples: [StreamSample] = []
        for i in 0..<60 { samples.append(self.sample(at: Double(i), wan: 60 + Double(i % 7) * 0.3, service: 5)) }
        for i in 60..<120 { samples.append(self.sample(at: Double(i), wan: 150 + Double(i % 5) * 0.3, service: 5)) }
        let v = Diagnosis.analyze(samples: samples, now: 120, window: 30)[0]
        #expect(v.blame?.segment == "mediary-a")
    }

    @Test func nothingMovedBlamesNobody() {
        let v = self.run(wanAfter: 60, serviceAfter: 5)
        #expect(v.blame == nil)
        #expect(v.verdict == "no segment moved")
    }

    @Test func failuresAreLocalisedToTheHopThatSawThem() throws {
        var samples = (0..<50).map { self.sample(at: Double($0), wan: 60, service: 5) }
        for i in 50..<60 {
            samples.append(
                self.sample(
                    at: Double(i), wan: 60, service: 5, code: "UNAVAILABLE",
                    failure: "gateway-b: upstream 127.0.0.1:7407 unreachable: connection refused"))
        }
        let v = Diagnosis.analyze(samples: samples, now: 60, window: 30)[0]
        let f = try #require(v.failures)
        #expect(f.firstSeenAt == "gateway-b")
        #expect(f.count == 10)
        #expect(v.verdict.contains("first seen at gateway-b"))
        #expect(Diagnosis.faultHop("upstream 127.0.0.1:1 unreachable: x") == nil)
        #expect(Diagnosis.faultHop("svc error: bad thing") == nil)
    }

    /// Probes of several targets through the same method are separate paths, each naming its
    /// target (from `insight-probe-target`), in the report, the diagnosis and the CLI's table.
    @Test func probePathsNameTheirTarget() throws {
        var samples: [StreamSample] = []
        for i in 0..<20 {
            for target in ["service-a", "service-b"] {
                var s = self.sample(at: Double(i), wan: 60, service: 5)
                (s.service, s.method, s.isProbe, s.target) = ("grpc.health.v1.Health", "Check", true, target)
                samples.append(s)
            }
        }
        samples.append(self.sample(at: 19, wan: 60, service: 5))
        let report = HopsReport(
            hop: "mediary-a", region: "a", samples: samples, probes: [], now: 20, window: 30, demo: nil)
        let probes = report.paths.filter { $0.source == "probe" }
        #expect(probes.map(\.target) == ["service-a", "service-b"])
        #expect(probes.allSatisfy { $0.count == 20 && $0.method == "Check" })
        #expect(report.paths.first { $0.source == "traffic" }?.target == nil)
        let json = try #require(String(data: JSONEncoder().encode(report), encoding: .utf8))
        #expect(json.contains(#""target":"service-b""#))

        let verdicts = Diagnosis.analyze(samples: samples, now: 20, window: 10)
        #expect(verdicts.filter { $0.source == "probe" }.map(\.target) == ["service-a", "service-b"])
        #expect(
            verdicts.map(DiagnoseCommand.title) == [
                "demo.Svc/Call [traffic]", "grpc.health.v1.Health/Check [probe → service-a]",
                "grpc.health.v1.Health/Check [probe → service-b]",
            ])
    }
}
