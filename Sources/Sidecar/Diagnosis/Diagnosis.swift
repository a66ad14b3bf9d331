import Foundation

/// Names the hop to blame: for each path, compares each segment's recent window with its
/// baseline (the hour before the window, or since start) and says which segment moved, by how
/// much, and how sure it is. Pure: samples in, verdicts out.
///
/// Confidence combines how consistent the shift is (the share of recent samples above the
/// baseline's median plus three median absolute deviations, at least 0.5 ms: a few percent
/// when nothing changed) with how much data there is (full at 20 samples on each side). The
/// median and MAD keep a step change visible until it fills half of the baseline. A segment
/// is blamed when its p50 moved by more than 2 ms and 25% with confidence at least 0.6.
enum Diagnosis {
    struct SegmentShift: Codable, Equatable {
        var segment: String
        var next: String
        var recentP50: Double
        var recentP99: Double
        var baselineP50: Double
        var baselineP99: Double
        var recentCount: Int
        var baselineCount: Int
        var deltaP50: Double
        var deltaP99: Double
        var confidence: Double

        enum CodingKeys: String, CodingKey {
            case segment, next
            case recentP50 = "recent_p50_ms"
            case recentP99 = "recent_p99_ms"
            case baselineP50 = "baseline_p50_ms"
            case baselineP99 = "baseline_p99_ms"
            case recentCount = "recent_count"
            case baselineCount = "baseline_count"
            case deltaP50 = "delta_p50_ms"
            case deltaP99 = "delta_p99_ms"
            case confidence
        }
    }

    struct Failures: Codable, Equatable {
        var count: Int
        var rate: Double
        /// The hop whose sidecar saw the failure first (the prefix of the failure message).
        var firstSeenAt: String?
        var message: String?

        enum CodingKeys: String, CodingKey {
            case count, rate, message
            case firstSeenAt = "first_seen_at"
        }
    }

    struct PathVerdict: Codable, Equatable {
        var service: String
        var method: String
        var source: String
        var target: String?
        var verdict: String
        var blame: SegmentShift?
        var segments: [SegmentShift]
        var failures: Failures?

        enum CodingKeys: String, CodingKey {
            case service, method, source, target, verdict, blame, segments, failures
        }

        /// Absent values are written as `null`, as the API documents them.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.service, forKey: .service)
            try c.encode(self.method, forKey: .method)
            try c.encode(self.source, forKey: .source)
            try c.encode(self.target, forKey: .target)
            try c.encode(self.verdict, forKey: .verdict)
            try c.encode(self.blame, forKey: .blame)
            try c.encode(self.segments, forKey: .segments)
            try c.encode(self.failures, forKey: .failures)
        }
    }

    static let minimumSamples = 5

    static func analyze(samples: [StreamSample], now: Double, window: Double, baselineSpan: Double = 3600)
        -> [PathVerdict]
    {
        var byPath: [String: [StreamSample]] = [:]
        for s in samples where s.time >= now - window - baselineSpan {
            byPath[s.pathKey, default: []].append(s)
        }
        var out: [PathVerdict] = []
        for (_, list) in byPath.sorted(by: { $0.key < $1.key }) {
            let first = list[0]
            let recent = list.filter { $0.time >= now - window }
            let baseline = list.filter { $0.time < now - window }
            var shifts: [SegmentShift] = []
            for (segment, next) in Self.segmentOrder(list) {
                let r = Self.values(recent, segment, next)
                let b = Self.values(baseline, segment, next)
                guard r.count >= Self.minimumSamples, b.count >= Self.minimumSamples else { continue }
                // Robust to a baseline that already holds some of the new level: its median and
                // median absolute deviation stay put until half of it has moved.
                let bp50 = Self.percentile(b, 0.5)
                let mad = Self.percentile(b.map { abs($0 - bp50) }, 0.5)
                let threshold = bp50 + max(0.5, 3 * mad)
                let above = Double(r.filter { $0 > threshold }.count) / Double(r.count)
                let consistency = min(1, max(0, (above - 0.1) / 0.8))
                let support = min(1, Double(min(r.count, b.count)) / 20)
                let (rp50, rp99, bp99) = (Self.percentile(r, 0.5), Self.percentile(r, 0.99), Self.percentile(b, 0.99))
                shifts.append(
                    SegmentShift(
                        segment: segment, next: next, recentP50: rp50, recentP99: rp99, baselineP50: bp50,
                        baselineP99: bp99, recentCount: r.count, baselineCount: b.count, deltaP50: rp50 - bp50,
                        deltaP99: rp99 - bp99, confidence: (consistency * support * 100).rounded() / 100))
            }
            let blame =
                shifts
                .filter { $0.deltaP50 > max(2, 0.25 * $0.baselineP50) && $0.confidence >= 0.6 }
                .max { $0.deltaP50 < $1.deltaP50 }
            let failed = recent.filter { $0.code != "OK" }
            var failures: Failures?
            if !failed.isEmpty {
                let messages = failed.compactMap(\.failure)
                let common = Dictionary(grouping: messages, by: { $0 }).max { $0.value.count < $1.value.count }?.key
                let hop = common.flatMap(Self.faultHop)
                failures = Failures(
                    count: failed.count, rate: Double(failed.count) / Double(recent.count), firstSeenAt: hop,
                    message: common)
            }
            var verdict: String
            if let b = blame {
                let name = b.next == "service" ? "\(b.segment) → service" : b.segment
                verdict = String(
                    format: "segment %@ moved %+.1f ms (p50 %.1f → %.1f ms, p99 %.1f → %.1f ms), confidence %.2f", name,
                    b.deltaP50, b.baselineP50, b.recentP50, b.baselineP99, b.recentP99, b.confidence)
            } else if baseline.count < Self.minimumSamples {
                verdict = "collecting a baseline (\(baseline.count) samples before the recent window)"
            } else {
                verdict = "no segment moved"
            }
            if let f = failures, f.rate >= 0.05 {
                verdict += String(format: "; %.0f%% of calls failed", f.rate * 100)
                if let hop = f.firstSeenAt { verdict += ", first seen at \(hop)" }
            }
            out.append(
                PathVerdict(
                    service: first.service, method: first.method, source: first.isProbe ? "probe" : "traffic",
                    target: first.target,
                    verdict: verdict, blame: blame, segments: shifts, failures: failures))
        }
        return out
    }

    /// The hop named at the start of a failure message (`<hop>: …`, as sidecars write the
    /// responses they make up themselves), if the prefix is a hop name.
    static func faultHop(_ message: String) -> String? {
        guard let colon = message.firstIndex(of: ":"), message[colon...].hasPrefix(": ") else { return nil }
        let hop = String(message[..<colon])
        guard (try? SidecarConfig.checkName(hop, field: "hop")) != nil else { return nil }
        return hop
    }

    /// Segments in chain order (outermost first), as the most complete recent sample has them.
    static func segmentOrder(_ samples: [StreamSample]) -> [(String, String)] {
        var order: [(String, String)] = []
        var seen = Set<String>()
        for s in samples.sorted(by: { $0.segments.count > $1.segments.count }) {
            for seg in s.segments where seen.insert(seg.hop + "\u{0}" + seg.next).inserted {
                order.append((seg.hop, seg.next))
            }
        }
        return order
    }

    static func values(_ samples: [StreamSample], _ segment: String, _ next: String) -> [Double] {
        var v: [Double] = []
        for s in samples {
            for seg in s.segments where seg.hop == segment && seg.next == next { v.append(seg.milliseconds) }
        }
        return v
    }

    /// Nearest-rank percentile.
    static func percentile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
        return sorted[max(0, min(sorted.count - 1, rank))]
    }
}
