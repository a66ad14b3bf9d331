import Foundation

/// The JSON behind the status page (`/api/v1/hops`): per path, the recent segments with their
/// p50/p99, codes, this sidecar's own time, a short timeline, and the probe matrix.
struct HopsReport: Codable {
    struct SegmentStats: Codable {
        var segment: String
        var next: String
        var p50: Double
        var p99: Double
        var count: Int

        enum CodingKeys: String, CodingKey {
            case segment, next, count
            case p50 = "p50_ms"
            case p99 = "p99_ms"
        }
    }

    struct TimelinePoint: Codable {
        /// Unix seconds at the start of the bucket.
        var t: Double
        /// p50 per segment, in chain order (as `segments`).
        var p50: [Double]

        enum CodingKeys: String, CodingKey {
            case t
            case p50 = "p50_ms"
        }
    }

    struct Path: Codable {
        var service: String
        var method: String
        var source: String
        /// For probes: the target's name.
        var target: String?
        var count: Int
        var codes: [String: Int]
        var errorRate: Double
        var segments: [SegmentStats]
        var durationP50: Double
        var durationP99: Double
        var overheadP50: Double
        var overheadP99: Double
        var timeline: [TimelinePoint]

        enum CodingKeys: String, CodingKey {
            case service, method, source, target, count, codes, segments, timeline
            case errorRate = "error_rate"
            case durationP50 = "dur_p50_ms"
            case durationP99 = "dur_p99_ms"
            case overheadP50 = "overhead_p50_ms"
            case overheadP99 = "overhead_p99_ms"
        }
    }

    var hop: String
    var region: String
    var now: Double
    var windowSeconds: Double
    var paths: [Path]
    var probes: [ProbeStatus]
    var demo: DemoState?

    enum CodingKeys: String, CodingKey {
        case hop, region, now, paths, probes, demo
        case windowSeconds = "window_seconds"
    }

    /// `demo` is written as `null` outside the demo, as the API documents it.
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.hop, forKey: .hop)
        try c.encode(self.region, forKey: .region)
        try c.encode(self.now, forKey: .now)
        try c.encode(self.windowSeconds, forKey: .windowSeconds)
        try c.encode(self.paths, forKey: .paths)
        try c.encode(self.probes, forKey: .probes)
        try c.encode(self.demo, forKey: .demo)
    }

    static let timelineBucket = 5.0
    static let timelineSpan = 120.0

    init(
        hop: String, region: String, samples: [StreamSample], probes: [ProbeStatus], now: Double, window: Double,
        demo: DemoState?
    ) {
        self.hop = hop
        self.region = region
        self.now = now
        self.windowSeconds = window
        self.probes = probes.sorted {
            ($0.sourceRegion, $0.targetRegion, $0.target) < ($1.sourceRegion, $1.targetRegion, $1.target)
        }
        self.demo = demo
        var byPath: [String: [StreamSample]] = [:]
        for s in samples { byPath[s.pathKey, default: []].append(s) }
        self.paths = byPath.sorted { $0.key < $1.key }.map { _, list in
            let recent = list.filter { $0.time >= now - window }
            let order = Diagnosis.segmentOrder(recent.isEmpty ? list : recent)
            let segments = order.map { seg, next in
                let v = Diagnosis.values(recent, seg, next)
                return SegmentStats(
                    segment: seg, next: next, p50: Diagnosis.percentile(v, 0.5), p99: Diagnosis.percentile(v, 0.99),
                    count: v.count)
            }
            var codes: [String: Int] = [:]
            for s in recent { codes[s.code, default: 0] += 1 }
            let durations = recent.compactMap(\.duration)
            let overheads = recent.compactMap(\.selfTime)
            var timeline: [TimelinePoint] = []
            let start =
                (now - Self.timelineSpan)
                - (now - Self.timelineSpan).truncatingRemainder(dividingBy: Self.timelineBucket)
            var t = start
            while t < now {
                let bucket = list.filter { $0.time >= t && $0.time < t + Self.timelineBucket }
                if !bucket.isEmpty {
                    timeline.append(
                        TimelinePoint(
                            t: t, p50: order.map { Diagnosis.percentile(Diagnosis.values(bucket, $0.0, $0.1), 0.5) }))
                }
                t += Self.timelineBucket
            }
            return Path(
                service: list[0].service, method: list[0].method, source: list[0].isProbe ? "probe" : "traffic",
                target: list[0].target,
                count: recent.count, codes: codes,
                errorRate: recent.isEmpty ? 0 : Double(recent.filter { $0.code != "OK" }.count) / Double(recent.count),
                segments: segments, durationP50: Diagnosis.percentile(durations, 0.5),
                durationP99: Diagnosis.percentile(durations, 0.99), overheadP50: Diagnosis.percentile(overheads, 0.5),
                overheadP99: Diagnosis.percentile(overheads, 0.99), timeline: timeline)
        }
    }
}
