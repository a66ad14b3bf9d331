import Foundation

/// Names the hop to blame: for each path, compares each segment's recent samples with its
/// baseline (the samples before the recent window, up to an hour back) and says which segment
/// moved, by how much, and how sure it is. Pure: samples in, verdicts out.
///
/// "Recent" is tried at several spans ending now: the window, half of it, a quarter, … down to
/// ``minimumSpan`` (``spans(window:)``), so that a step is seen as soon as it fills the
/// shortest span instead of half of the whole window. For each span a one-sided
/// ``MannWhitneyTest`` asks whether the recent samples are larger than the baseline ones; its
/// p-value is multiplied by the number of spans tried (Bonferroni). A segment **moved** over a
/// span when all three hold:
/// - the adjusted p-value is at most ``maximumPValue`` (it is not chance),
/// - the effect size (probability that a recent sample is larger than a baseline one) is at least
///   ``minimumSuperiority`` (most recent calls are slower, not a few),
/// - the p50 rose by at least ``minimumShift`` ms and ``minimumRelativeShift`` of the baseline
///   p50 (it matters).
/// Of the spans over which it moved, the one with the largest effect size is reported (the
/// longest of equals): right after a step, the span that holds mostly new samples. A segment
/// that did not move reports the whole window. Confidence is 1 − the adjusted p-value. How much
/// a moved segment moved is the Hodges–Lehmann shift (``hodgesLehmann(sortedRecent:sortedBaseline:)``);
/// the blamed segment is the moved one with the largest shift.
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
        /// How far back the recent samples reach, in seconds: the span over which the segment
        /// moved the most clearly, else the whole window.
        var recentSeconds: Double
        /// One-sided Mann–Whitney p-value of "recent is slower than baseline", multiplied by the
        /// number of spans tried, at most 1.
        var pValue: Double
        /// Probability that a recent sample is larger than a baseline one, ties half (0.5: no change).
        var superiority: Double
        /// 1 − `pValue`, rounded to 4 decimals.
        var confidence: Double
        /// Whether the segment moved over `recentSeconds` (``Diagnosis/moved(_:)``).
        var moved = false
        /// How much slower, milliseconds: the Hodges–Lehmann estimate (the median of every
        /// recent − baseline difference), the shift that goes with the rank test. Unlike
        /// `deltaP50` it is not pulled down by the old samples still in the span right
        /// after a step (a +100 ms step read +50 ms as a p50 delta with 36 % old samples).
        var shift: Double = 0

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
            case recentSeconds = "recent_seconds"
            case pValue = "p_value"
            case superiority, confidence, moved
            case shift = "shift_ms"
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

    /// Samples needed on each side before a segment is compared.
    static let minimumSamples = 5
    /// The shortest recent span tried, in seconds.
    static let minimumSpan = 2.0
    /// Largest adjusted p-value that counts as a shift.
    static let maximumPValue = 0.001
    /// Smallest effect size that counts as a shift. Right after a step, 0.8 means that 60 % of
    /// the span is new, so that its p50 is already at the new level.
    static let minimumSuperiority = 0.8
    /// Smallest p50 increase that counts, in milliseconds.
    static let minimumShift = 2.0
    /// Smallest p50 increase that counts, as a share of the baseline p50.
    static let minimumRelativeShift = 0.2

    /// The recent spans tried, in seconds, longest first: `window`, `window / 2`, … while at
    /// least ``minimumSpan`` (the window alone if it is shorter).
    static func spans(window: Double) -> [Double] {
        var spans = [window]
        while spans[spans.count - 1] / 2 >= Self.minimumSpan { spans.append(spans[spans.count - 1] / 2) }
        return spans
    }

    /// Compares one segment's recent samples with its baseline; nil without
    /// ``minimumSamples`` on each side.
    /// - Parameters:
    ///   - recent: (Unix seconds, milliseconds) of the samples in the window.
    ///   - baseline: milliseconds before the window.
    static func shift(
        segment: String, next: String, recent: [(time: Double, ms: Double)], baseline: [Double], now: Double,
        window: Double
    ) -> SegmentShift? {
        guard recent.count >= Self.minimumSamples, baseline.count >= Self.minimumSamples else { return nil }
        let b = baseline.sorted()
        let (bp50, bp99) = (Self.percentile(sorted: b, 0.5), Self.percentile(sorted: b, 0.99))
        let spans = Self.spans(window: window)
        var reported: SegmentShift?
        var strongest: SegmentShift?
        for span in spans {
            let r = recent.filter { $0.time >= now - span }.map(\.ms).sorted()
            guard r.count >= Self.minimumSamples else { break }
            let test = MannWhitneyTest(sortedRecent: r, sortedBaseline: b)
            let p = min(1, test.pValue * Double(spans.count))
            let (rp50, rp99) = (Self.percentile(sorted: r, 0.5), Self.percentile(sorted: r, 0.99))
            let shift = SegmentShift(
                segment: segment, next: next, recentP50: rp50, recentP99: rp99, baselineP50: bp50, baselineP99: bp99,
                recentCount: r.count, baselineCount: b.count, deltaP50: rp50 - bp50, deltaP99: rp99 - bp99,
                recentSeconds: span, pValue: p, superiority: (test.superiority * 1000).rounded() / 1000,
                confidence: ((1 - p) * 10000).rounded() / 10000)
            if reported == nil { reported = shift }
            if Self.moved(shift) && shift.superiority > (strongest?.superiority ?? 0) {
                strongest = shift
                strongest?.moved = true
                let after = Self.sinceChange(recent.filter { $0.time >= now - span })
                strongest?.shift = (Self.hodgesLehmann(sortedRecent: after, sortedBaseline: b) * 1000).rounded() / 1000
            }
        }
        return strongest ?? reported
    }

    /// The samples after the most likely change point, sorted: a move is measured on them, not
    /// on a span that still holds samples from before it (right after a +100 ms step, half of
    /// the shortest span is old samples, and the shift over all of it read +52 ms in CI).
    ///
    /// The change point is where the cumulative sum of the time-ordered samples departs most
    /// from a straight line (the least-squares split for one step in the mean: CUSUM). Fewer
    /// than ``minimumSamples`` after it: all samples.
    static func sinceChange(_ samples: [(time: Double, ms: Double)]) -> [Double] {
        let x = samples.sorted { $0.time < $1.time }.map(\.ms)
        let n = x.count
        guard n > Self.minimumSamples else { return x.sorted() }
        let total = x.reduce(0, +)
        var sum = 0.0
        var best = 0
        var bestDeparture = 0.0
        for k in 1..<n {
            sum += x[k - 1]
            let departure = abs(sum - Double(k) / Double(n) * total) / (Double(k) * Double(n - k)).squareRoot()
            if departure > bestDeparture {
                bestDeparture = departure
                best = k
            }
        }
        guard n - best >= Self.minimumSamples else { return x.sorted() }
        return x[best...].sorted()
    }

    /// The median of `r[i] − b[j]` over all pairs (both sorted ascending, not empty), found by
    /// bisection on the value with an O(n + m) count per step instead of n × m differences.
    static func hodgesLehmann(sortedRecent r: [Double], sortedBaseline b: [Double]) -> Double {
        guard let rFirst = r.first, let rLast = r.last, let bFirst = b.first, let bLast = b.last else { return 0 }
        let half = (Double(r.count) * Double(b.count)) / 2
        /// Pairs with r[i] − b[j] ≤ d, i.e. b[j] ≥ r[i] − d: as r[i] grows, the first such j does too.
        func atMost(_ d: Double) -> Double {
            var count = 0
            var j = 0
            for x in r {
                while j < b.count && b[j] < x - d { j += 1 }
                count += b.count - j
            }
            return Double(count)
        }
        var lo = rFirst - bLast
        var hi = rLast - bFirst
        for _ in 0..<64 where hi - lo > 1e-4 {
            let mid = (lo + hi) / 2
            if atMost(mid) >= half { hi = mid } else { lo = mid }
        }
        return hi
    }

    /// Whether a compared segment moved (the rule in the type's summary).
    static func moved(_ s: SegmentShift) -> Bool {
        s.pValue <= Self.maximumPValue && s.superiority >= Self.minimumSuperiority
            && s.deltaP50 >= max(Self.minimumShift, Self.minimumRelativeShift * s.baselineP50)
    }

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
            let order = Self.segmentOrder(list)
            var timed = [[(time: Double, ms: Double)]](repeating: [], count: order.count)
            for s in list {
                for seg in s.segments {
                    if let k = order.firstIndex(where: { $0.0 == seg.hop && $0.1 == seg.next }) {
                        timed[k].append((s.time, seg.milliseconds))
                    }
                }
            }
            var shifts: [SegmentShift] = []
            for (k, (segment, next)) in order.enumerated() {
                if let shift = Self.shift(
                    segment: segment, next: next, recent: timed[k].filter { $0.time >= now - window },
                    baseline: timed[k].filter { $0.time < now - window }.map(\.ms), now: now, window: window)
                {
                    shifts.append(shift)
                }
            }
            let blame =
                shifts
                .filter(\.moved)
                .max { $0.shift < $1.shift }
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
                    format:
                        "segment %@ moved %+.1f ms (p50 %.1f → %.1f ms, p99 %.1f → %.1f ms) over the last %.0f s,"
                        + " confidence %.4f (rank test p %.1g, %.0f%% of pairs slower)", name, b.shift,
                    b.baselineP50, b.recentP50, b.baselineP99, b.recentP99, b.recentSeconds, b.confidence, b.pValue,
                    b.superiority * 100)
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
        for length in Set(samples.map(\.segments.count)).sorted(by: >) {
            for s in samples where s.segments.count == length {
                for seg in s.segments where !order.contains(where: { $0.0 == seg.hop && $0.1 == seg.next }) {
                    order.append((seg.hop, seg.next))
                }
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
        Self.percentile(sorted: values.sorted(), q)
    }

    /// Nearest-rank percentile of values sorted ascending; 0 when there are none.
    static func percentile(sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
        return sorted[max(0, min(sorted.count - 1, rank))]
    }
}
