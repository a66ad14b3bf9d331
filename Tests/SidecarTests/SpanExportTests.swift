import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Sidecar

/// The OTLP/HTTP body, checked byte for byte against Python's `opentelemetry-proto`.
@Suite struct OTLPTraceRequestTests {
    static func hex(_ b: ByteBuffer) -> String { b.readableBytesView.map { String(format: "%02x", $0) }.joined() }

    static func bytes(_ hex: String) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: hex.count / 2)
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            b.writeInteger(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return b
    }

    /// One span with a parent, tracestate, every attribute kind (an empty string too) and an
    /// error status. The golden bytes are `ExportTraceServiceRequest.SerializeToString()` of
    /// the same message built with `opentelemetry-proto` 1.x (script in the commit message).
    @Test func oneSpanMatchesPythonsEncoding() {
        let span = SpanRecord(
            traceID: (0x0af7_6519_16cd_43dd, 0x8448_eb21_1c80_319c), spanID: 0xb7ad_6b71_6920_3331,
            parentSpanID: 0x00f0_67aa_0ba9_02b7, traceState: "congo=t61rcWkgMzE", name: "test.Echo/Unary",
            startNanos: 1_764_460_800_000_000_000, endNanos: 1_764_460_800_001_250_000,
            attributes: [
                SpanAttribute("rpc.system", "grpc"), SpanAttribute("rpc.grpc.status_code", 14),
                SpanAttribute("insight.dur_ms", 1.25), SpanAttribute("insight.route", ""),
            ], errorMessage: "upstream refused")
        let body = OTLPTraceRequest.encode(
            [span],
            resource: [
                SpanAttribute("service.name", "insight-sidecar"), SpanAttribute("insight.hop", "edge"),
                SpanAttribute("insight.region", "eu"),
            ], scope: (name: "insight-sidecar", version: "0.9.0"))
        #expect(
            Self.hex(body)
                == "0acc020a520a210a0c736572766963652e6e616d6512110a0f696e73696768742d736964656361720a150a0b696e"
                + "73696768742e686f7012060a04656467650a160a0e696e73696768742e726567696f6e12040a02657512f5010a18"
                + "0a0f696e73696768742d736964656361721205302e392e3012d8010a100af7651916cd43dd8448eb211c80319c12"
                + "08b7ad6b71692033311a11636f6e676f3d7436317263576b674d7a45220800f067aa0ba902b72a0f746573742e45"
                + "63686f2f556e61727930033900001ac4bf9f7c1841d0122dc4bf9f7c184a140a0a7270632e73797374656d12060a"
                + "04677270634a1a0a147270632e677270632e7374617475735f636f64651202180e4a1b0a0e696e73696768742e64"
                + "75725f6d73120921000000000000f43f4a130a0d696e73696768742e726f75746512020a007a1412107570737472"
                + "65616d20726566757365641802")
    }

    @Test func readsPartialSuccess() {
        #expect(
            OTLPTraceResponse(decoding: Self.bytes("0a0b08031207746f6f206f6c64"))
                == OTLPTraceResponse(rejectedSpans: 3, errorMessage: "too old"))
        #expect(OTLPTraceResponse(decoding: ByteBuffer()) == OTLPTraceResponse())
        #expect(OTLPTraceResponse(decoding: Self.bytes("0aff")) == OTLPTraceResponse())
    }
}

/// The OTLP/HTTP retry rules.
@Suite struct ExportRetryTests {
    let r = ExportRetry()

    @Test func retries429And5xxGatewayStatusesWithBackoffOrRetryAfter() {
        #expect(
            r.verdict(.status(429, retryAfter: "2"), attempt: 1, elapsed: .zero, spans: 5) == .retry(after: .seconds(2))
        )
        #expect(
            r.verdict(.status(429, retryAfter: nil), attempt: 1, elapsed: .zero, spans: 5) == .retry(after: .seconds(1))
        )
        #expect(
            r.verdict(.status(503, retryAfter: nil), attempt: 2, elapsed: .zero, spans: 5) == .retry(after: .seconds(2))
        )
        #expect(
            r.verdict(.status(502, retryAfter: nil), attempt: 3, elapsed: .zero, spans: 5) == .retry(after: .seconds(4))
        )
        #expect(
            r.verdict(.status(504, retryAfter: " 3 "), attempt: 1, elapsed: .zero, spans: 5)
                == .retry(after: .seconds(3)))
        // An HTTP-date is not read: the backoff applies.
        #expect(
            r.verdict(.status(429, retryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"), attempt: 1, elapsed: .zero, spans: 5)
                == .retry(after: .seconds(1)))
    }

    @Test func givesUpAfterTheLastAttemptOrPastTheBudget() {
        #expect(r.verdict(.status(429, retryAfter: "1"), attempt: 4, elapsed: .zero, spans: 5) == .drop(.throttled))
        #expect(r.verdict(.status(503, retryAfter: nil), attempt: 4, elapsed: .zero, spans: 5) == .drop(.exportFailed))
        #expect(r.verdict(.status(429, retryAfter: "60"), attempt: 1, elapsed: .zero, spans: 5) == .drop(.throttled))
        #expect(
            r.verdict(.status(429, retryAfter: "2"), attempt: 2, elapsed: .seconds(14), spans: 5) == .drop(.throttled))
    }

    @Test func neverRetriesOtherErrors() {
        #expect(r.verdict(.status(400, retryAfter: "1"), attempt: 1, elapsed: .zero, spans: 5) == .drop(.rejected))
        #expect(r.verdict(.status(401, retryAfter: nil), attempt: 1, elapsed: .zero, spans: 5) == .drop(.rejected))
        #expect(r.verdict(.status(500, retryAfter: "1"), attempt: 1, elapsed: .zero, spans: 5) == .drop(.exportFailed))
        #expect(r.verdict(.timedOut, attempt: 1, elapsed: .zero, spans: 5) == .drop(.exportTimeout))
        #expect(r.verdict(.failed, attempt: 1, elapsed: .zero, spans: 5) == .drop(.exportFailed))
    }

    @Test func partialSuccessSplitsTheBatch() {
        #expect(
            r.verdict(.accepted(rejected: 0), attempt: 1, elapsed: .zero, spans: 5)
                == .exported(accepted: 5, rejected: 0))
        #expect(
            r.verdict(.accepted(rejected: 3), attempt: 2, elapsed: .zero, spans: 5)
                == .exported(accepted: 2, rejected: 3))
        #expect(
            r.verdict(.accepted(rejected: 9), attempt: 1, elapsed: .zero, spans: 5)
                == .exported(accepted: 0, rejected: 5))
    }
}

@Suite struct ExportQueueTests {
    static func spans(_ n: Int, from: UInt64 = 1) -> [SpanRecord] {
        (0..<UInt64(n)).map { i in
            SpanRecord(
                traceID: (1, from + i), spanID: from + i, parentSpanID: 0, traceState: "", name: "s", startNanos: 1,
                endNanos: 2, attributes: [], errorMessage: nil)
        }
    }

    @Test func dropsWhatDoesNotFitAndTakesInOrder() {
        var q = ExportQueue(capacity: 10)
        let offers = [
            q.offer(Self.spans(4, from: 1)), q.offer(Self.spans(4, from: 5)), q.offer(Self.spans(4, from: 9)),
        ]
        #expect(offers == [nil, nil, ExportQueue.Dropped(reason: .queueFull, count: 2)])
        #expect(q.queued == 10)
        let full = q.offer(Self.spans(1, from: 20))
        #expect(full == ExportQueue.Dropped(reason: .queueFull, count: 1))
        let first = q.take(max: 6)
        #expect(first?.map(\.spanID) == Array(1...6))
        #expect(q.queued == 4)
        let rest = q.take(max: 6)
        #expect(rest?.map(\.spanID) == Array(7...10))
        let none = q.take(max: 6)
        #expect(none == nil)
        #expect(q.queued == 0)
        q.stop()
        let late = q.offer(Self.spans(3))
        #expect(late == ExportQueue.Dropped(reason: .shutdown, count: 3))
    }
}

/// The pipeline against a fake collector: every span ends up counted exactly once.
@Suite struct SpanExportTests {
    /// A collector answering from a script, one answer per request (the last one repeats);
    /// `.hang` answers never, until cancelled.
    final class FakeCollector: Sendable {
        enum Answer: Sendable {
            case outcome(ExportOutcome)
            case hang
        }

        let answers: [Answer]
        let requests = NIOLockedValueBox<[(at: ContinuousClock.Instant, spans: Int)]>([])

        init(_ answers: [Answer]) { self.answers = answers }

        func send(_ body: ByteBuffer) async -> ExportOutcome {
            let n = Self.spanCount(body)
            let i = self.requests.withLockedValue { r in
                r.append((ContinuousClock.now, n))
                return r.count - 1
            }
            switch self.answers[min(i, self.answers.count - 1)] {
            case .outcome(let o): return o
            case .hang:
                try? await Task.sleep(for: .seconds(24 * 3600))
                return .failed
            }
        }

        /// Spans in an encoded request (ResourceSpans 1 → ScopeSpans 2 → Span 2).
        static func spanCount(_ body: ByteBuffer) -> Int {
            var n = 0
            try? ProtoWire.forEachField(in: body) { _, rs in
                guard case .bytes(let rs) = rs else { return }
                try ProtoWire.forEachField(in: rs) { f, ss in
                    guard f == 2, case .bytes(let ss) = ss else { return }
                    try ProtoWire.forEachField(in: ss) { f, _ in if f == 2 { n += 1 } }
                }
            }
            return n
        }
    }

    struct Harness {
        let registry = MetricsRegistry()
        let metrics: SpanMetrics
        let export: SpanExport
        let collector: FakeCollector

        init(_ answers: [FakeCollector.Answer], capacity: Int = 2048, batchSize: Int = 512) {
            self.metrics = SpanMetrics(registry: self.registry, hop: "h")
            let collector = FakeCollector(answers)
            self.collector = collector
            var options = TracingOptions()
            options.otlpEndpoint = "http://127.0.0.1:1"
            options.maxQueuedSpans = capacity
            self.export = SpanExport(
                options: options, hop: "h", region: "r", metrics: self.metrics, logger: Logger(label: "test"),
                batchSize: batchSize, send: { await collector.send($0) })
            self.export.start()
        }

        func dropped(_ reason: SpanMetrics.DropReason) -> UInt64 { self.metrics.dropped[reason]!.value }
        var exported: UInt64 { self.metrics.exported.value }
        var droppedTotal: UInt64 { SpanMetrics.DropReason.allCases.reduce(0) { $0 + self.dropped($1) } }
    }

    @Test func collectorDownDropsEveryQueuedSpanExactlyOnce() async {
        let h = Harness([.outcome(.failed)], capacity: 100, batchSize: 30)
        for i in 0..<5 { h.export.enqueue(ExportQueueTests.spans(40, from: UInt64(1 + 40 * i))) }
        let lost = await h.export.stop(within: .seconds(600))
        #expect(lost == 0)
        #expect(h.exported == 0)
        // 200 offered: what the queue held (at least 100) failed, the rest did not fit.
        #expect(h.dropped(.exportFailed) + h.dropped(.queueFull) == 200)
        #expect(h.dropped(.exportFailed) >= 100)
        #expect(h.droppedTotal == 200)
        #expect(
            h.collector.requests.withLockedValue { $0.map { $0.spans }.reduce(0, +) } == Int(h.dropped(.exportFailed)))
    }

    @Test func retriesA429AfterItsRetryAfterThenExports() async {
        let h = Harness([.outcome(.status(429, retryAfter: "1")), .outcome(.accepted(rejected: 0))])
        h.export.enqueue(ExportQueueTests.spans(7))
        let lost = await h.export.stop(within: .seconds(600))
        #expect(lost == 0)
        #expect(h.exported == 7)
        #expect(h.droppedTotal == 0)
        let requests = h.collector.requests.withLockedValue { $0 }
        #expect(requests.count == 2)
        if requests.count == 2 { #expect(requests[1].at - requests[0].at >= .seconds(1)) }
    }

    @Test func a400IsNotRetriedAndCountsAsRejected() async {
        let h = Harness([.outcome(.status(400, retryAfter: nil)), .outcome(.accepted(rejected: 0))])
        h.export.enqueue(ExportQueueTests.spans(7))
        _ = await h.export.stop(within: .seconds(600))
        #expect(h.dropped(.rejected) == 7 && h.exported == 0)
        #expect(h.collector.requests.withLockedValue { $0.count } == 1)
    }

    /// The collector never answers, so `stop` returning at all shows it did not wait for the
    /// collector (it would wait forever; the time limit turns that into a failure). How soon it
    /// returns is not checked: the exporter runs on the cooperative pool, where tests running in
    /// parallel delayed this 300 ms window by up to 88 s under the sanitizers.
    @Test(.timeLimit(.minutes(10))) func shutdownCountsWhatTheHangingCollectorHolds() async {
        let h = Harness([.hang], batchSize: 10)
        h.export.enqueue(ExportQueueTests.spans(25))
        // Stop while the collector holds the first batch.
        while h.collector.requests.withLockedValue({ $0.isEmpty }) { try? await Task.sleep(for: .milliseconds(5)) }
        let lost = await h.export.stop(within: .milliseconds(300))
        #expect(lost == 25)
        #expect(h.dropped(.shutdown) == 25 && h.droppedTotal == 25)
        // A span that ends after shutdown is counted too.
        h.export.enqueue(ExportQueueTests.spans(2))
        #expect(h.dropped(.shutdown) == 27)
    }
}
