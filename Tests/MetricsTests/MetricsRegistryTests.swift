import Testing

@testable import Metrics

@Suite struct MetricsRegistryTests {
    /// A registry with one family of each kind, an exemplar at a fixed time, and text that
    /// needs escaping in HELP and in a label value.
    private func sample() -> MetricsRegistry {
        let registry = MetricsRegistry(clock: { 1_700_000_000.25 })
        registry.counter(
            "insight_x_total", help: "Calls\\done.\nSecond \"line\".", labels: [("code", "OK")]
        ).increment(by: 3)
        registry.gauge("insight_open", help: "Open now.", labels: [("path", "a\"b\\c\nd")]).set(-2)
        let h = registry.histogram(
            "insight_latency_seconds", help: "Latency.", labels: [("hop", "h")], buckets: [0.1, 1])
        h.observe(0.05, exemplar: ("trace_id", "abc"))
        h.observe(0.5)
        h.observe(2)
        registry.declare("insight_empty_total", help: "Declared only.", kind: .counter)
        return registry
    }

    @Test func prometheusTextGolden() {
        let expected = """
            # HELP insight_x_total Calls\\\\done.\\nSecond "line".
            # TYPE insight_x_total counter
            insight_x_total{code="OK"} 3
            # HELP insight_open Open now.
            # TYPE insight_open gauge
            insight_open{path="a\\"b\\\\c\\nd"} -2
            # HELP insight_latency_seconds Latency.
            # TYPE insight_latency_seconds histogram
            insight_latency_seconds_bucket{hop="h",le="0.1"} 1
            insight_latency_seconds_bucket{hop="h",le="1.0"} 2
            insight_latency_seconds_bucket{hop="h",le="+Inf"} 3
            insight_latency_seconds_sum{hop="h"} 2.55
            insight_latency_seconds_count{hop="h"} 3
            # HELP insight_empty_total Declared only.
            # TYPE insight_empty_total counter

            """
        #expect(self.sample().render() == expected)
    }

    @Test func openMetricsGoldenWithExemplars() {
        let expected = """
            # HELP insight_x Calls\\\\done.\\nSecond \\"line\\".
            # TYPE insight_x counter
            insight_x_total{code="OK"} 3
            # HELP insight_open Open now.
            # TYPE insight_open gauge
            insight_open{path="a\\"b\\\\c\\nd"} -2
            # HELP insight_latency_seconds Latency.
            # TYPE insight_latency_seconds histogram
            insight_latency_seconds_bucket{hop="h",le="0.1"} 1 # {trace_id="abc"} 0.05 1700000000.250
            insight_latency_seconds_bucket{hop="h",le="1.0"} 2
            insight_latency_seconds_bucket{hop="h",le="+Inf"} 3
            insight_latency_seconds_sum{hop="h"} 2.55
            insight_latency_seconds_count{hop="h"} 3
            # HELP insight_empty Declared only.
            # TYPE insight_empty counter
            # EOF

            """
        #expect(self.sample().render(openMetrics: true) == expected)
    }

    @Test func aNameRegisteredWithAnotherKindIsAnError() throws {
        let registry = MetricsRegistry()
        _ = registry.counter("insight_a_total", help: "A.")
        try registry.register("insight_a_total", help: "A.", kind: .counter)
        #expect(
            throws: MetricsRegistry.RegistrationError(name: "insight_a_total", registered: .counter, requested: .gauge)
        ) {
            try registry.register("insight_a_total", help: "A.", kind: .gauge)
        }
        // Nothing was added: one family, one TYPE line.
        #expect(registry.render().components(separatedBy: "# TYPE insight_a_total").count == 2)
    }

    @Test func makingASeriesOfAnotherKindStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            let registry = MetricsRegistry()
            _ = registry.counter("insight_a_total", help: "A.")
            _ = registry.gauge("insight_a_total", help: "A.")
        }
    }

    @Test func removeMatchesLabelsExactly() {
        let registry = MetricsRegistry()
        let family = "insight_probe_up"
        let keep1 = [("region", "eu"), ("target", "ab"), ("target_region", "us")]
        let keep2 = [("region", "eu"), ("target", "a"), ("target_region", "us")]
        let gone = [("region", "us"), ("target", "a"), ("target_region", "us")]
        for labels in [keep1, keep2, gone] { registry.gauge(family, help: "Up.", labels: labels).set(1) }
        // `target="a"` is not `target="ab"`, and `region="eu"` is not `target_region="eu"`.
        registry.remove(family, matching: [("target", "a"), ("region", "us"), ("target_region", "us")])
        let text = registry.render()
        #expect(text.contains(#"target="ab""#))
        #expect(text.contains(#"region="eu",target="a",target_region="us""#))
        #expect(!text.contains(#"region="us",target="a",target_region="us""#))
        // The removed series is made again from scratch on next use.
        #expect(registry.gauge(family, help: "Up.", labels: gone).value == 0)
    }

    @Test func seriesCacheMakesEachValueOnce() {
        let cache = SeriesCache<String, Counter>()
        var made = 0
        let a = cache.value(for: "a") {
            made += 1
            return Counter()
        }
        let again = cache.value(for: "a") {
            made += 1
            return Counter()
        }
        #expect(a === again)
        #expect(made == 1)
        cache.removeValue(forKey: "a")
        #expect(cache.count == 0)
    }
}

@Suite struct MetricsRenderBytesTests {
    @Test func valuesArePrintedAsSwiftPrintsThem() {
        let registry = MetricsRegistry()
        registry.counter("insight_c_total", help: "c").increment(by: .max)
        registry.counter("insight_z_total", help: "z", labels: [("a", "b")]).increment(by: 0)
        registry.gauge("insight_g", help: "g").set(-9_000_000_001)
        registry.gauge("insight_h", help: "h").set(.min)
        let text = String(decoding: registry.renderBytes(), as: UTF8.self)
        #expect(text.contains("insight_c_total \(UInt64.max)\n"))
        #expect(text.contains("insight_z_total{a=\"b\"} 0\n"))
        #expect(text.contains("insight_g -9000000001\n"))
        #expect(text.contains("insight_h \(Int64.min)\n"))
        #expect(text == registry.render())
    }
}

@Suite struct ExemplarRenderTests {
    @Test func exemplarTimestampsHaveMillisecondsAndLabelValuesAreEscaped() {
        let registry = MetricsRegistry(clock: { 1_700_000_000.007 })
        registry.histogram("insight_x_seconds", help: "x", buckets: [1]).observe(0.5, exemplar: ("trace_id", "a\"b"))
        let text = registry.render(openMetrics: true)
        #expect(text.contains(#"insight_x_seconds_bucket{le="1.0"} 1 # {trace_id="a\"b"} 0.5 1700000000.007"#))
    }
}
