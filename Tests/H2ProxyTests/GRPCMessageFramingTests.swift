import NIOCore
import Testing

@testable import H2Proxy

@Suite struct GRPCMessageFramingTests {
    func message(_ length: Int) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: length + 5)
        b.writeInteger(UInt8(0))
        b.writeInteger(UInt32(length))
        b.writeRepeatingByte(0x41, count: length)
        return b
    }

    func buffer(_ bytes: [UInt8]) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        return b
    }

    @Test func countsWholeAndSplitMessages() {
        var framing = GRPCMessageFraming()
        var all = self.message(3)
        var second = self.message(0)
        var third = self.message(100)
        all.writeBuffer(&second)
        all.writeBuffer(&third)
        // Split at every position: the total count is always 3.
        for cut in 0...all.readableBytes {
            var f = GRPCMessageFraming()
            let a = all.getSlice(at: 0, length: cut)!
            let b = all.getSlice(at: cut, length: all.readableBytes - cut)!
            #expect(f.consume(a) + f.consume(b) == 3)
            #expect(!f.isMidMessage)
        }
        #expect(framing.consume(self.message(10).getSlice(at: 0, length: 7)!) == 0)
        #expect(framing.isMidMessage)
    }

    /// Golden bytes: a zero compressed flag, then the length as 4 big-endian bytes
    /// (gRPC over HTTP/2, Length-Prefixed-Message); 300 = 0x012c.
    @Test func frameWritesTheFlagAndTheBigEndianLength() {
        let small = GRPCMessageFraming.frame(self.buffer([0x0a, 0x01, 0x73]))
        #expect(Array(small.readableBytesView) == [0x00, 0x00, 0x00, 0x00, 0x03, 0x0a, 0x01, 0x73])
        let large = GRPCMessageFraming.frame(self.buffer(Array(repeating: 0x7e, count: 300)))
        #expect(Array(large.readableBytesView.prefix(5)) == [0x00, 0x00, 0x00, 0x01, 0x2c])
        #expect(large.readableBytes == 305)
        #expect(Array(GRPCMessageFraming.frame(self.buffer([])).readableBytesView) == [0, 0, 0, 0, 0])
    }

    @Test func firstMessageIsASliceOfTheFirstOnly() throws {
        var body = GRPCMessageFraming.frame(self.buffer([1, 2, 3]))
        var next = GRPCMessageFraming.frame(self.buffer([4, 5]))
        body.writeBuffer(&next)
        #expect(Array(try GRPCMessageFraming.firstMessage(in: body).readableBytesView) == [1, 2, 3])
        #expect(try GRPCMessageFraming.firstMessage(in: self.buffer([0, 0, 0, 0, 0])).readableBytes == 0)
    }

    @Test(arguments: [
        ([] as [UInt8], "no gRPC message in the response"),
        ([0, 0, 0, 0], "no gRPC message in the response"),
        ([1, 0, 0, 0, 1, 0x41], "compressed gRPC message"),
        ([0, 0, 0, 0, 2, 0x41], "truncated gRPC message"),
        ([0, 0xff, 0xff, 0xff, 0xff], "truncated gRPC message"),
    ])
    func firstMessageRejectsBodiesWithoutOneWholeUncompressedMessage(bytes: [UInt8], reason: String) {
        #expect(throws: GRPCMessageFraming.DecodeError(reason: reason)) {
            _ = try GRPCMessageFraming.firstMessage(in: self.buffer(bytes))
        }
    }

    /// Random messages, framed by `frame`, joined and cut into random chunks: counting finds
    /// every message, agrees with `firstMessage`, and is mid-message exactly when the bytes stop
    /// inside one. Replay a failure with `INSIGHT_TEST_SEED=N swift test --filter GRPCMessageFramingTests`.
    @Test func framingAndCountingAgreeOnRandomBodies() throws {
        for seed in SeededRandom.seeds(count: 2000) {
            var rng = SeededRandom(seed: seed)
            var body = ByteBufferAllocator().buffer(capacity: 0)
            var ends: Set<Int> = [0]
            var first: [UInt8]?
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let length = Int.random(in: 0...(Bool.random(using: &rng) ? 8 : 700), using: &rng)
                let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
                first = first ?? payload
                var framed = GRPCMessageFraming.frame(self.buffer(payload))
                body.writeBuffer(&framed)
                ends.insert(body.readableBytes)
            }
            let stop =
                Bool.random(using: &rng) ? body.readableBytes : Int.random(in: 0...body.readableBytes, using: &rng)
            var framing = GRPCMessageFraming()
            var counted = 0
            var at = 0
            while at < stop {
                let n = min(stop - at, Int.random(in: 0...64, using: &rng))
                counted += framing.consume(body.getSlice(at: at, length: n)!)
                at += n
            }
            let expected = ends.filter { $0 > 0 && $0 <= stop }.count
            #expect(counted == expected, "seed \(seed): counted \(counted) of \(expected) messages in \(stop) bytes")
            #expect(framing.isMidMessage == !ends.contains(stop), "seed \(seed): stopped at \(stop), ends \(ends)")
            let decoded = Array(try GRPCMessageFraming.firstMessage(in: body).readableBytesView)
            #expect(decoded == first, "seed \(seed): first message differs")
        }
    }
}
