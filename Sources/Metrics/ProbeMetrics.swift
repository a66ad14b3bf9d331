import Foundation

/// Active (probe) metrics: one exporter with the passive ones, the same label names.
public final class ProbeMetrics: @unchecked Sendable {
    public let registry: MetricsRegistry
    public let hop: String
    public let region: String
    public let echoAnswered: Counter
    private let targetSeries = SeriesCache<[String], TargetSeries>()
    private let targetCounts = SeriesCache<String, Gauge>()
    private let discoveryErrors = SeriesCache<[String], Counter>()
    private let unmappedTargets = SeriesCache<[String], Counter>()

    /// The series of one target.
    public final class TargetSeries: @unchecked Sendable {
        let registry: MetricsRegistry
        let labels: [(String, String)]
        public let duration: Histogram
        public let up: Gauge
        private let results = SeriesCache<[String], Counter>()

        init(registry: MetricsRegistry, labels: [(String, String)]) {
            self.registry = registry
            self.labels = labels
            self.duration = registry.histogram(
                "insight_probe_duration_seconds", help: "Latency of successful probes.", labels: labels)
            self.up = registry.gauge(
                "insight_probe_up", help: "1 if the target's last probe succeeded, else 0.", labels: labels)
        }

        /// `insight_probe_total` for a result and gRPC code.
        public func result(_ result: String, code: String) -> Counter {
            self.results.value(for: [result, code]) {
                self.registry.counter(
                    "insight_probe_total", help: "Probes by target and result.",
                    labels: self.labels + [("result", result), ("code", code)])
            }
        }
    }

    public init(registry: MetricsRegistry, hop: String, region: String) {
        self.registry = registry
        self.hop = hop
        self.region = region
        self.echoAnswered = registry.counter(
            "insight_probe_echo_answered_total", help: "Echo probes this sidecar answered in receiver mode.",
            labels: [("hop", hop)])
        registry.declare("insight_probe_total", help: "Probes by target and result.", kind: .counter)
        registry.declare("insight_probe_targets", help: "Probe targets by discovery source.", kind: .gauge)
    }

    public func target(name: String, targetRegion: String, kind: String) -> TargetSeries {
        self.targetSeries.value(for: [name, targetRegion, kind]) {
            TargetSeries(
                registry: self.registry,
                labels: [
                    ("hop", self.hop), ("region", self.region), ("target", name), ("target_region", targetRegion),
                    ("kind", kind),
                ])
        }
    }

    /// Forgets a target that discovery removed: its series leave `/metrics`.
    public func removeTarget(name: String, targetRegion: String, kind: String) {
        self.targetSeries.removeValue(forKey: [name, targetRegion, kind])
        let labels = [
            ("hop", self.hop), ("region", self.region), ("target", name), ("target_region", targetRegion),
            ("kind", kind),
        ]
        for family in ["insight_probe_total", "insight_probe_duration_seconds", "insight_probe_up"] {
            self.registry.remove(family, matching: labels)
        }
    }

    public func setTargetCount(source: String, _ count: Int) {
        self.targetCounts.value(for: source) {
            self.registry.gauge(
                "insight_probe_targets", help: "Probe targets by discovery source.", labels: [("source", source)])
        }.set(Int64(count))
    }

    /// Counts a target discovery error (`source`: `consul` or `file`); the last good targets are kept.
    public func discoveryError(source: String, reason: String) {
        self.discoveryErrors.value(for: [source, reason]) {
            self.registry.counter(
                "insight_discovery_errors_total",
                help: "Probe target discovery errors, by source and reason (the last good targets are kept).",
                labels: [("source", source), ("reason", reason)])
        }.increment()
    }

    /// Counts a discovered target left out because its datacenter maps to no region (once per
    /// appearance in discovery, not per probe round).
    public func unmappedTarget(source: String, datacenter: String) {
        self.unmappedTargets.value(for: [source, datacenter]) {
            self.registry.counter(
                "insight_probe_unmapped_targets_total",
                help: "Discovered probe targets not probed because their datacenter maps to no region.",
                labels: [("source", source), ("datacenter", datacenter)])
        }.increment()
    }
}
