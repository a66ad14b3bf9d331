import H2Proxy
import Testing

@testable import Sidecar

/// W3C `traceparent` parsing and formatting (https://www.w3.org/TR/trace-context/#traceparent-header).
@Suite struct TraceParentTests {
    static func parse(_ s: String) -> TraceParent? { TraceParent(Array(s.utf8)) }

    static func hex(_ v: UInt64, _ digits: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s.suffix(digits)
    }

    @Test func parsesTheSpecExample() throws {
        let tp = try #require(Self.parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        #expect(tp.traceID.high == 0x0af7_6519_16cd_43dd && tp.traceID.low == 0x8448_eb21_1c80_319c)
        #expect(tp.parentID == 0xb7ad_6b71_6920_3331)
        #expect(tp.sampled)
        #expect(tp.formatted == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(tp.traceIDHex == "0af7651916cd43dd8448eb211c80319c")
        #expect(tp.parentIDHex == "b7ad6b7169203331")
    }

    /// Seeded random ids and flags: format → parse is the identity, and the text is what the
    /// spec's grammar says, byte for byte.
    @Test func roundTripsRandomValues() throws {
        var seed = SplitMix(state: 0x1313)
        var rng = Xoshiro256(seed: &seed)
        for _ in 0..<2000 {
            let tp = TraceParent(
                traceID: (rng.next() | 1, rng.next()), parentID: rng.next() | 1,
                flags: UInt8(truncatingIfNeeded: rng.next()))
            let text = tp.formatted
            #expect(text.utf8.count == 55)
            #expect(
                text
                    == "00-\(Self.hex(tp.traceID.high, 16))\(Self.hex(tp.traceID.low, 16))-\(Self.hex(tp.parentID, 16))-\(Self.hex(UInt64(tp.flags), 2))"
            )
            #expect(Self.parse(text) == tp)
            #expect(tp.sampled == (tp.flags & 1 == 1))
        }
    }

    /// Seeded random corruptions of a valid value: any byte replaced by one outside lower-case
    /// hex (or a `-` moved) makes it invalid.
    @Test func rejectsRandomCorruptions() {
        var seed = SplitMix(state: 42)
        var rng = Xoshiro256(seed: &seed)
        let valid = Array("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".utf8)
        let bad: [UInt8] = Array("ABCDEFGXYZ-_ g:+".utf8) + [0, 0xff, 0x80]
        for _ in 0..<2000 {
            var v = valid
            let i = Int(rng.next() % 55)
            let b = bad[Int(rng.next() % UInt64(bad.count))]
            if [2, 35, 52].contains(i) && b == UInt8(ascii: "-") { continue }
            v[i] = b
            #expect(TraceParent(v) == nil, "\(String(decoding: v, as: UTF8.self))")
        }
    }

    @Test(arguments: [
        "",  // empty
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",  // short
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",  // version 00 is exactly 55
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  // upper case
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  // all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  // all-zero parent id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  // version ff
        "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  // version not hex
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  // wrong separator
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",  // flags not hex
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",  // later version: field after '-' only
    ])
    func rejectsInvalidForms(_ text: String) {
        #expect(Self.parse(text) == nil)
    }

    /// A later version may append fields after a `-`: the first four are read, and it is
    /// forwarded as version 00.
    @Test func acceptsALaterVersionWithMoreFields() throws {
        let tp = try #require(
            Self.parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds"))
        #expect(tp.formatted == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(Self.parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") != nil)
    }

    @Test func findsInHeaderBlocks() {
        var h = HeaderBlock()
        #expect(TraceParent.find(in: h) == .absent)
        h.append(name: "traceparent", value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
        guard case .valid(let tp) = TraceParent.find(in: h) else {
            Issue.record("not found")
            return
        }
        #expect(!tp.sampled)
        var bad = HeaderBlock()
        bad.append(name: "traceparent", value: "garbage")
        #expect(TraceParent.find(in: bad) == .invalid)
    }
}

@Suite struct TraceSamplerTests {
    let parent = TraceParent(traceID: (1, 2), parentID: 3, flags: 1)

    @Test func honoursTheCallersSampledFlag() {
        for ratio in [0.0, 0.5, 1.0] {
            let s = TraceSampler(ratio: ratio)
            #expect(s.decide(.valid(self.parent), draw: .max) == .sample(parent: self.parent))
            var unsampled = self.parent
            unsampled.flags = 0
            #expect(s.decide(.valid(unsampled), draw: 0) == .followUnsampled)
        }
    }

    @Test func ratioZeroAndOne() {
        #expect(TraceSampler(ratio: 0).decide(.absent, draw: 0) == .startUnsampled)
        #expect(TraceSampler(ratio: 1).decide(.absent, draw: .max) == .sample(parent: nil))
        #expect(TraceSampler(ratio: 1).decide(.invalid, draw: 7) == .sample(parent: nil))
    }

    /// Over seeded uniform draws the sampled share is the ratio (within 1 % absolute).
    @Test(arguments: [0.01, 0.1, 0.5, 0.9])
    func samplesTheRatioOfNewTraces(_ ratio: Double) {
        var seed = SplitMix(state: UInt64(ratio * 1000))
        var rng = Xoshiro256(seed: &seed)
        let s = TraceSampler(ratio: ratio)
        let n = 100_000
        var sampled = 0
        for _ in 0..<n where s.decide(.absent, draw: rng.next()) == .sample(parent: nil) { sampled += 1 }
        #expect(abs(Double(sampled) / Double(n) - ratio) < 0.01)
    }
}

@Suite struct SpanExportHealthTests {
    @Test func logsOncePerStateChange() {
        var h = SpanExportHealth()
        #expect(h.event(.exported(spans: 3)) == .none)
        #expect(h.event(.dropped(.exportFailed, spans: 2)) == .logFailing(.exportFailed))
        #expect(h.event(.dropped(.exportFailed, spans: 5)) == .none)
        #expect(h.event(.dropped(.queueFull, spans: 1)) == .none)
        #expect(h.event(.dropped(.exportTimeout, spans: 1)) == .none)
        #expect(h.event(.exported(spans: 1)) == .logRecovered(dropped: 9))
        #expect(h.event(.exported(spans: 1)) == .none)
        #expect(h.event(.dropped(.exportTimeout, spans: 4)) == .logFailing(.exportTimeout))
    }
}

@Suite struct ServerTimingTests {
    @Test func formatsTheEntry() {
        #expect(
            ServerTiming.entry(hop: "gw", region: "eu", milliseconds: 12.3456) == "insight-gw;dur=12.346;desc=\"eu\"")
        #expect(ServerTiming.entry(hop: "gw", region: "eu", milliseconds: 7) == "insight-gw;dur=7;desc=\"eu\"")
        #expect(ServerTiming.entry(hop: "gw", region: "eu", milliseconds: 0.05) == "insight-gw;dur=0.05;desc=\"eu\"")
    }

    @Test func splitsOutsideQuotes() {
        #expect(ServerTiming.split("a;desc=\"x, y\", b;dur=1 ,, c") == ["a;desc=\"x, y\"", "b;dur=1", "c"])
        #expect(ServerTiming.split("a;desc=\"q\\\", r\", b") == ["a;desc=\"q\\\", r\"", "b"])
    }

    @Test func appendsToEveryExistingField() {
        var h = HeaderBlock()
        h.append(name: "server-timing", value: "app;dur=1")
        h.append(name: "server-timing", value: "cache;desc=\"hit\"")
        ServerTiming.apply(&h, entry: "insight-x;dur=2;desc=\"r\"", strip: false)
        #expect(h.first("server-timing") == "app;dur=1, cache;desc=\"hit\", insight-x;dur=2;desc=\"r\"")
        #expect((0..<h.count).filter { h.nameEquals(at: $0, "server-timing") }.count == 1)
    }

    @Test func stripRemovesOnlyInsightEntries() {
        var h = HeaderBlock()
        h.append(name: "server-timing", value: "insight-a;dur=1, app;dur=2, insight-b;dur=3")
        ServerTiming.apply(&h, entry: "insight-x;dur=2", strip: true)
        #expect(h.first("server-timing") == "app;dur=2")
        var only = HeaderBlock()
        only.append(name: "server-timing", value: "insight-a;dur=1")
        ServerTiming.apply(&only, entry: nil, strip: true)
        #expect(only.firstIndex(of: "server-timing") == nil)
    }
}

@Suite struct TracingConfigTests {
    @Test func loadsTheTracingSection() throws {
        let c = try SidecarConfig.load(
            yaml: """
                server_timing: true
                tracing:
                  otlp_endpoint: http://tempo:4318
                  sample_ratio: 0.25
                  service_name: edge
                  max_queued_spans: 100
                  headers:
                    authorization: Bearer x
                """)
        #expect(c.serverTiming)
        #expect(c.tracing.otlpEndpoint == "http://tempo:4318")
        #expect(c.tracing.tracesURL == "http://tempo:4318/v1/traces")
        #expect(c.tracing.sampleRatio == 0.25)
        #expect(c.tracing.serviceName == "edge")
        #expect(c.tracing.maxQueuedSpans == 100)
        #expect(c.tracing.headers == [HeaderPair(name: "authorization", value: "Bearer x")])
        #expect(!SidecarConfig().tracing.isEnabled)
    }

    @Test(arguments: [
        ("tracing:\n  sample_ratio: 1.5", "tracing.sample_ratio"),
        ("tracing:\n  sample_ratio: -0.1", "tracing.sample_ratio"),
        ("tracing:\n  sample_ratio: lots", "tracing.sample_ratio"),
        ("tracing:\n  bogus: 1", "tracing.bogus"),
        ("tracing: yes", "tracing"),
    ])
    func rejectsBadYAML(_ yaml: String, _ field: String) {
        #expect(throws: ConfigError.self) { try SidecarConfig.load(yaml: yaml) }
        do {
            _ = try SidecarConfig.load(yaml: yaml)
        } catch {
            #expect(error.field == field)
        }
    }

    @Test(arguments: [
        (TracingOptions.with { $0.otlpEndpoint = "tempo:4318" }, "tracing.otlp_endpoint"),
        (TracingOptions.with { $0.headers = [HeaderPair(name: "bad name", value: "v")] }, "tracing.headers"),
        (TracingOptions.with { $0.headers = [HeaderPair(name: "x", value: "a\r\nb")] }, "tracing.headers.x"),
        (TracingOptions.with { $0.serviceName = "" }, "tracing.service_name"),
        (TracingOptions.with { $0.maxQueuedSpans = 1 }, "tracing.max_queued_spans"),
    ])
    func validationNamesTheField(_ t: TracingOptions, _ field: String) {
        do {
            try t.validate()
            Issue.record("accepted \(t)")
        } catch {
            #expect(error.field == field)
        }
    }

    @Test func flagHeaderParsing() throws {
        #expect(try TracingOptions.header("x-api-key=a=b") == HeaderPair(name: "x-api-key", value: "a=b"))
        #expect(throws: ConfigError.self) { try TracingOptions.header("=v") }
        #expect(throws: ConfigError.self) { try TracingOptions.header("novalue") }
    }
}

extension TracingOptions {
    fileprivate static func with(_ f: (inout TracingOptions) -> Void) -> TracingOptions {
        var t = TracingOptions()
        f(&t)
        return t
    }
}

/// SplitMix64: seeds the generators of these tests from a fixed number.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
