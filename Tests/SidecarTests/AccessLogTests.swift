import Foundation
import H2Proxy
import Testing

@testable import Sidecar

@Suite struct AccessLogTests {
    static func entry(_ reason: StreamEndReason = .completed) -> AccessLog.Entry {
        AccessLog.Entry(
            epochMicros: 1_735_787_045_678_901, hop: "mediary-a", source: "traffic", service: "demo.v1.Demo",
            method: "Get", httpMethod: "POST", code: "OK", reason: reason,
            traceID: "4bf92f3577b34da6a3ce929d0e0e4736", dur: 56.84, ttfb: nil, selfTime: 0.1,
            segments: [.init(hop: "gateway-b", next: "service", milliseconds: 15.5)])
    }

    static func object(_ line: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test func rfc3339InUTCWithMilliseconds() {
        #expect(AccessLog.rfc3339(epochMicros: 1_735_787_045_678_901) == "2025-01-02T03:04:05.678Z")
        #expect(AccessLog.rfc3339(epochMicros: 0) == "1970-01-01T00:00:00.000Z")
    }

    @Test func millisecondsHaveThreeDecimals() {
        #expect(AccessLog.milliseconds(56.84) == "56.840")
        #expect(AccessLog.milliseconds(0) == "0.000")
        #expect(AccessLog.milliseconds(0.0005) == "0.001")
        #expect(AccessLog.milliseconds(1234.5678) == "1234.568")
    }

    @Test func numbersAndStringsAreWrittenAsJSON() throws {
        #expect(AccessLog.milliseconds(-1.5) == "-1.500")
        #expect(AccessLog.milliseconds(.nan) == "0.000")
        #expect(AccessLog.milliseconds(1_000_000.000_4) == "1000000.000")
        var e = Self.entry()
        e.service = "caf\u{e9}.v1\u{1}\t\\"
        let line = AccessLog.line(e)
        #expect(line.contains(#""service":"café.v1\u0001\t\\""#))
        #expect(try Self.object(line)["service"] as? String == e.service)
    }

    @Test func completedLineHasFieldsInOrderAndNoResetCode() throws {
        let line = AccessLog.line(Self.entry())
        #expect(line.hasPrefix("{\"time\":\"2025-01-02T03:04:05.678Z\",\"hop\":\"mediary-a\",\"source\":\"traffic\""))
        let o = try Self.object(line)
        #expect(o["end"] as? String == "completed")
        #expect(o["trace_id"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(o["reset_code"] == nil && o["message"] == nil && o["ttfb_ms"] == nil)
        #expect(line.contains("\"dur_ms\":56.840,"))
        #expect(line.contains("\"segments\":[{\"segment\":\"gateway-b\",\"next\":\"service\",\"ms\":15.500}]"))
    }

    @Test func endReasonsAreStableWords() throws {
        let reset = try Self.object(AccessLog.line(Self.entry(.downstreamReset(8))))
        #expect(reset["end"] as? String == "client_reset")
        #expect(reset["reset_code"] as? String == "CANCEL")
        let up = try Self.object(AccessLog.line(Self.entry(.upstreamReset(0x42))))
        #expect(up["end"] as? String == "upstream_reset")
        #expect(up["reset_code"] as? String == "0x42")
        let gone = try Self.object(AccessLog.line(Self.entry(.upstreamUnavailable("mediary-a: \"x\"\n"))))
        #expect(gone["end"] as? String == "upstream_unavailable")
        #expect(gone["message"] as? String == "mediary-a: \"x\"\n")
        for reason in [StreamEndReason.downstreamReset(8), .upstreamUnavailable("u")] {
            #expect(!AccessLog.line(Self.entry(reason)).contains("StreamEndReason"))
        }
    }
}
