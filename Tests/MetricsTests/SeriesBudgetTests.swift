import Testing

@testable import Metrics

@Suite struct SeriesBudgetTests {
    private func samples(_ text: String) -> [Substring] {
        text.split(separator: "\n").filter { !$0.hasPrefix("#") }
    }

    @Test func chargesWhatFitsAndRefusesTheRest() {
        var budget = SeriesBudget(limit: 100)
        let results = [budget.charge(60), budget.charge(41), budget.charge(40), budget.charge(1)]
        #expect(results == [true, false, true, false])
        #expect(budget.spent == 100)
        #expect(budget.refused == 2)
        #expect(SeriesBudget(limit: -5).limit == 0)
    }

    /// The charge is the series' exposition bytes: exact when every value is as long as the
    /// allowance, an upper bound when values are shorter.
    @Test(arguments: [MetricsRegistry.Kind.counter, .histogram])
    func exposedBytesMatchTheRenderedSeries(kind: MetricsRegistry.Kind) {
        let registry = MetricsRegistry()
        let labels = [("hop", "h"), ("service", "pkg.Service"), ("method", "Method")]
        let rendered = MetricsRegistry.render(labels: labels)
        let cost = MetricsRegistry.exposedBytes(
            name: "insight_x", renderedLabels: rendered, kind: kind, bucketCount: Histogram.defaultBuckets.count)
        let before = registry.render().utf8.count
        switch kind {
        case .histogram:
            let h = registry.histogram("insight_x", help: "x", labels: labels)
            h.observe(0.0001)
        default:
            registry.counter("insight_x", help: "x", labels: labels).increment()
        }
        let header = "# HELP insight_x x\n# TYPE insight_x \(kind.rawValue)\n".utf8.count
        let added = registry.render().utf8.count - before - header
        #expect(added <= cost)
        // Every line's value is 1 (a short sum too), so the rest of each line is exact.
        let lines = kind == .histogram ? Histogram.defaultBuckets.count + 3 : 1
        let slack = lines * (MetricsRegistry.sampleValueBytes - 1) + (kind == .histogram ? 12 : 0)
        #expect(cost - added <= slack + lines * 7)
    }

    @Test func pastTheBudgetNewLabelSetsShareTheOverflowSeries() {
        let registry = MetricsRegistry()
        let refusals = Counter()
        let one = MetricsRegistry.exposedBytes(
            name: "insight_c_total", renderedLabels: MetricsRegistry.render(labels: [("hop", "h"), ("service", "s0")]),
            kind: .counter, bucketCount: 0)
        registry.limitSeries(SeriesBudget(limit: 2 * one), refusals: refusals)
        func counter(_ service: String) -> Counter {
            registry.counter(
                "insight_c_total", help: "c", labels: [("hop", "h"), ("service", service)], fold: ["service"])
        }
        let first = counter("s0")
        let second = counter("s1")
        let third = counter("s2")
        let fourth = counter("s3")
        #expect(first !== second)
        #expect(third === fourth)
        // A label set that has its series keeps it, and costs nothing again.
        #expect(counter("s0") === first)
        #expect(refusals.value == 2)
        let lines = self.samples(registry.render())
        #expect(lines.contains(#"insight_c_total{hop="h",service="other"} 0"#))
        #expect(lines.count == 3)
        // Series asked for without `fold` are not budgeted.
        registry.counter("insight_fixed_total", help: "f", labels: [("hop", "h")]).increment()
        #expect(self.samples(registry.render()).count == 4)
    }

    /// The shape of a hostile client at the default cap: every route with 128-character
    /// names, every call shape (streaming, probes, every code). The scrape stays within
    /// the budget plus the fixed families and the overflow series.
    @Test func theWorstCaseAtTheDefaultCapStaysUnderOneMegabyte() {
        let registry = MetricsRegistry()
        let metrics = TrafficMetrics(registry: registry, hop: "mediary-a", region: "eu-west", headerErrorReasons: [])
        let fixed = registry.render().utf8.count
        let codes = ["OK", "CANCELLED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "INTERNAL", "UNKNOWN"]
        for r in 0..<(2 * metrics.maxRoutes) {
            let long = String(repeating: "x", count: 120)
            let route = metrics.route(service: "acme.s\(r)\(long)", method: "m\(r)\(long)")
            for source in RouteMetrics.Source.allCases {
                for kind in RouteMetrics.HistogramKind.allCases { route.histogram(kind, source).observe(0.001) }
                route.messages(source, response: false).increment()
                route.messages(source, response: true).increment()
                for code in codes { route.requests(code: code, source: source.label).increment() }
            }
            _ = metrics.segment(segment: "peer\(r)\(long)", next: "next\(r)", source: "traffic")
        }
        let size = registry.render().utf8.count
        let budget = metrics.maxRoutes * TrafficMetrics.seriesBytesPerRoute
        #expect(registry.seriesBudget?.spent ?? .max <= budget)
        #expect(metrics.seriesOverflow.value > 0)
        #expect(size - fixed <= budget + 40_000, "overflow series take at most 40 KB")
        #expect(size <= 1_000_000, "\(size) bytes")
        // Without the budget the same traffic would make several megabytes.
        let unbounded = MetricsRegistry()
        let m2 = TrafficMetrics(registry: unbounded, hop: "mediary-a", region: "eu-west", headerErrorReasons: [])
        unbounded.limitSeries(SeriesBudget(limit: .max), refusals: Counter())
        for r in 0..<m2.maxRoutes {
            let route = m2.route(service: "acme.s\(r)" + String(repeating: "x", count: 120), method: "m")
            for kind in RouteMetrics.HistogramKind.allCases { route.histogram(kind, .traffic).observe(0.001) }
        }
        #expect(unbounded.render().utf8.count > 1_000_000)
    }
}
