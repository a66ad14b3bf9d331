import H2Proxy
import NIOCore
import Testing

@testable import Sidecar

/// The hand-written protobuf messages of the probes (`Sources/Sidecar/Probes/ProtoWire/`).
///
/// The golden bytes come from Python's protobuf (7.36.2) with classes generated from `Proto/` by
/// `python3 -m grpc_tools.protoc -IProto --python_out=OUT Proto/insight/probe/v1/probe.proto
/// Proto/grpc/health/v1/health.proto`, e.g.
/// `EchoRequest(id="abc", ...).SerializeToString()`; each is spelled out field by field below
/// (a field's key is `number << 3 | wire type`: 0 varint, 2 length-delimited).
@Suite struct ProtoWireTests {
    func buffer(_ bytes: [UInt8]) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        return b
    }

    let echoRequest = EchoRequest(
        id: "abc", payload: [0, 1, 255], sentUnixMicros: 1_796_000_000_123_456, sourceHop: "mediary-a",
        sourceRegion: "a", target: "receiver-b")

    /// `EchoRequest(id="abc", payload=b"\x00\x01\xff", sent_unix_micros=1796000000123456,
    /// source_hop="mediary-a", source_region="a", target="receiver-b")`.
    static let echoRequestBytes: [UInt8] =
        [0x0a, 0x03] + Array("abc".utf8)  // 1 id: string
        + [0x12, 0x03, 0x00, 0x01, 0xff]  // 2 payload: bytes
        + [0x18, 0xc0, 0xc4, 0x98, 0xb0, 0xbd, 0xae, 0x98, 0x03]  // 3 sent_unix_micros: int64 varint
        + [0x22, 0x09] + Array("mediary-a".utf8)  // 4 source_hop
        + [0x2a, 0x01] + Array("a".utf8)  // 5 source_region
        + [0x32, 0x0a] + Array("receiver-b".utf8)  // 6 target

    let echoResponse = EchoResponse(id: "x", payload: [9], hop: "gateway-b", region: "b", receivedUnixMicros: -5)

    /// `EchoResponse(id="x", payload=b"\x09", hop="gateway-b", region="b",
    /// received_unix_micros=-5)`: a negative int64 is a 10-byte varint (two's complement).
    static let echoResponseBytes: [UInt8] =
        [0x0a, 0x01] + Array("x".utf8)  // 1 id
        + [0x12, 0x01, 0x09]  // 2 payload
        + [0x1a, 0x09] + Array("gateway-b".utf8)  // 3 hop
        + [0x22, 0x01] + Array("b".utf8)  // 4 region
        + [0x28, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]  // 5 received_unix_micros

    /// Fields no message here has, one of each wire type the decoder skips: 15 fixed32,
    /// 16 fixed64, 20 bytes ("hi"). Python's protobuf parses a message with them around it to
    /// the same values.
    static let unknownFields: [UInt8] =
        [0x7d, 1, 2, 3, 4] + [0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8] + [0xa2, 0x01, 0x02, 0x68, 0x69]

    @Test func echoRequestMatchesTheReferenceBytes() throws {
        #expect(Array(self.echoRequest.encoded().readableBytesView) == Self.echoRequestBytes)
        #expect(try EchoRequest(decoding: self.buffer(Self.echoRequestBytes)) == self.echoRequest)
        let wrapped = Self.unknownFields + Self.echoRequestBytes + Self.unknownFields
        #expect(try EchoRequest(decoding: self.buffer(wrapped)) == self.echoRequest)
        // Fields at their default values are not written (proto3): an empty message.
        let empty = EchoRequest(id: "", payload: [], sentUnixMicros: 0, sourceHop: "", sourceRegion: "", target: "")
        #expect(empty.encoded().readableBytes == 0)
        #expect(try EchoRequest(decoding: self.buffer([])) == empty)
    }

    /// The framed request written from a target's template is `GRPCMessageFraming.frame(encoded())`,
    /// for the reference message, an empty one, and seeded random ones (long strings too).
    @Test func framedEchoRequestIsTheFramedEncoding() {
        var requests = [
            self.echoRequest,
            EchoRequest(id: "", payload: [], sentUnixMicros: 0, sourceHop: "", sourceRegion: "", target: ""),
        ]
        var rng = SeededRandom(seed: 3)
        for _ in 0..<200 {
            let text = { (rng: inout SeededRandom) in
                String(
                    repeating: "x\u{e9}", count: Int.random(in: 0..<(Bool.random(using: &rng) ? 4 : 200), using: &rng))
            }
            requests.append(
                EchoRequest(
                    id: text(&rng),
                    payload: (0..<Int.random(in: 0..<300, using: &rng)).map { UInt8(truncatingIfNeeded: $0) },
                    sentUnixMicros: Int64.random(in: Int64.min...Int64.max, using: &rng), sourceHop: text(&rng),
                    sourceRegion: text(&rng), target: text(&rng)))
        }
        for r in requests {
            // Encoded once without the send time (a probe target's template), then framed with it.
            #expect(r.withoutSendTime.framed(sentUnixMicros: r.sentUnixMicros) == GRPCMessageFraming.frame(r.encoded()))
        }
    }

    @Test func echoResponseMatchesTheReferenceBytes() throws {
        #expect(Array(self.echoResponse.encoded().readableBytesView) == Self.echoResponseBytes)
        #expect(try EchoResponse(decoding: self.buffer(Self.echoResponseBytes)) == self.echoResponse)
        let wrapped = Self.unknownFields + Self.echoResponseBytes + Self.unknownFields
        #expect(try EchoResponse(decoding: self.buffer(wrapped)) == self.echoResponse)
        // A field that comes twice: the last one wins, as in Python (hop "a", then "gateway-b").
        let twice = [0x1a, 0x01, 0x61] + Self.echoResponseBytes
        #expect(try EchoResponse(decoding: self.buffer(twice)).hop == "gateway-b")
    }

    /// `HealthCheckRequest(service="svc")` is `0a 03 "svc"`; the empty service writes nothing.
    @Test func healthCheckRequestMatchesTheReferenceBytes() {
        #expect(
            Array(HealthCheckRequest(service: "svc").encoded().readableBytesView) == [0x0a, 0x03, 0x73, 0x76, 0x63])
        #expect(HealthCheckRequest(service: "").encoded().readableBytes == 0)
    }

    /// `HealthCheckResponse(status=NOT_SERVING)` is `08 02`; `status=-1` sign-extends to a
    /// 10-byte varint. Decoding: `08 01` plus an unknown varint field 9 (`48 96 01`) is SERVING;
    /// an `int32` enum keeps the low 32 bits of a longer varint (`08 81 80 80 80 10`, 2^32 + 1, is
    /// 1 in Python too); an empty message is UNKNOWN (0).
    @Test func healthCheckResponseMatchesTheReferenceBytes() throws {
        #expect(Array(HealthCheckResponse(status: 2).encoded().readableBytesView) == [0x08, 0x02])
        #expect(
            Array(HealthCheckResponse(status: -1).encoded().readableBytesView)
                == [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
        #expect(HealthCheckResponse(status: 0).encoded().readableBytes == 0)
        #expect(try HealthCheckResponse(decoding: self.buffer([0x08, 0x01, 0x48, 0x96, 0x01])).status == 1)
        #expect(
            try HealthCheckResponse(
                decoding: self.buffer([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
            )
            .status == -1)
        #expect(try HealthCheckResponse(decoding: self.buffer([0x08, 0x81, 0x80, 0x80, 0x80, 0x10])).status == 1)
        #expect(try HealthCheckResponse(decoding: self.buffer([])).status == 0)
    }

    /// What the probe sends and the responder answers, framed: the 5-byte gRPC prefix, then
    /// the message bytes above.
    @Test func framedMessagesAreThePrefixAndTheReferenceBytes() throws {
        let framed = GRPCMessageFraming.frame(self.echoRequest.encoded())
        #expect(Array(framed.readableBytesView) == [0, 0, 0, 0, 45] + Self.echoRequestBytes)
        #expect(try EchoRequest(decoding: GRPCMessageFraming.firstMessage(in: framed)) == self.echoRequest)
    }

    @Test(arguments: [
        [0x0a, 0x05, 0x61] as [UInt8],  // length past the end
        [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],  // varint too long
        [0x0b],  // group
        [0x08],  // truncated varint
        [0x00, 0x01],  // field 0
        [0x09, 0x01, 0x02],  // truncated fixed64
    ])
    func malformedMessagesAreRejected(bytes: [UInt8]) {
        #expect(throws: ProtoWire.DecodeError.self) { _ = try EchoResponse(decoding: self.buffer(bytes)) }
    }

    /// Random bytes, half of them built from well-formed fields: decoding never crashes, and
    /// whatever decodes encodes to bytes that decode to the same message. Seeds 1...5000;
    /// replay a failure with `INSIGHT_TEST_SEED=N swift test --filter randomBytesNeverCrash`.
    @Test func randomBytesNeverCrash() {
        var decoded = 0
        for seed in SeededRandom.seeds(count: 5000) {
            var rng = SeededRandom(seed: seed)
            let bytes = Self.randomMessage(using: &rng)
            let b = self.buffer(bytes)
            let hex = bytes.map { String($0, radix: 16) }.joined(separator: " ")
            if let m = try? EchoRequest(decoding: b) {
                decoded += 1
                #expect((try? EchoRequest(decoding: m.encoded())) == m, "seed \(seed): EchoRequest from \(hex)")
            }
            if let m = try? EchoResponse(decoding: b) {
                #expect((try? EchoResponse(decoding: m.encoded())) == m, "seed \(seed): EchoResponse from \(hex)")
            }
            if let m = try? HealthCheckResponse(decoding: b) {
                #expect(
                    (try? HealthCheckResponse(decoding: m.encoded())) == m,
                    "seed \(seed): HealthCheckResponse from \(hex)")
            }
            _ = try? GRPCMessageFraming.firstMessage(in: b)
        }
        // The generator must reach messages that decode, or the round trip checks nothing.
        if SeededRandom.seeds(count: 5000).count > 1 { #expect(decoded > 1000) }
    }

    /// Up to 40 random bytes, or a few random fields of any wire type, possibly cut short.
    static func randomMessage(using rng: inout SeededRandom) -> [UInt8] {
        if Bool.random(using: &rng) {
            return (0..<Int.random(in: 0..<40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        var out: [UInt8] = []
        func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 {
                out.append(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            out.append(UInt8(v))
        }
        for _ in 0..<Int.random(in: 0...5, using: &rng) {
            let field = UInt64.random(in: 1...8, using: &rng)
            switch [0, 0, 1, 2, 2, 5][Int.random(in: 0..<6, using: &rng)] {
            case 0:
                varint(field << 3)
                varint(Bool.random(using: &rng) ? UInt64.random(in: 0...300, using: &rng) : rng.next())
            case 1:
                varint(field << 3 | 1)
                out += (0..<8).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 2:
                varint(field << 3 | 2)
                let n = Int.random(in: 0...12, using: &rng)
                varint(UInt64(n))
                out += (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            default:
                varint(field << 3 | 5)
                out += (0..<4).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        if !out.isEmpty && Int.random(in: 0..<4, using: &rng) == 0 {
            out.removeLast(Int.random(in: 1...out.count, using: &rng))
        }
        return out
    }
}
