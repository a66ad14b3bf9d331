import NIOCore
import Testing

@testable import H2Proxy

@Suite struct GRPCMessageFramerTests {
    func message(_ length: Int) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: length + 5)
        b.writeInteger(UInt8(0))
        b.writeInteger(UInt32(length))
        b.writeRepeatingByte(0x41, count: length)
        return b
    }

    @Test func countsWholeAndSplitMessages() {
        var framer = GRPCMessageFramer()
        var all = self.message(3)
        var second = self.message(0)
        var third = self.message(100)
        all.writeBuffer(&second)
        all.writeBuffer(&third)
        // Split at every position: the total count is always 3.
        for cut in 0...all.readableBytes {
            var f = GRPCMessageFramer()
            let a = all.getSlice(at: 0, length: cut)!
            let b = all.getSlice(at: cut, length: all.readableBytes - cut)!
            #expect(f.consume(a) + f.consume(b) == 3)
            #expect(!f.isMidMessage)
        }
        #expect(framer.consume(self.message(10).getSlice(at: 0, length: 7)!) == 0)
        #expect(framer.isMidMessage)
    }
}

@Suite struct HeaderBlockTests {
    @Test func hopByHopFieldsAreStripped() {
        var h = HeaderBlock([
            (":method", "GET"), ("connection", "keep-alive"), ("te", "trailers"), ("te", "gzip"),
            ("keep-alive", "1"), ("proxy-connection", "x"), ("transfer-encoding", "chunked"), ("upgrade", "h2c"),
            ("x-keep", "yes"),
        ])
        HopByHopHeaders.strip(&h)
        #expect(h.pairs.map(\.name) == [":method", "te", "x-keep"])
        #expect(h.first("te") == "trailers")
    }

    @Test func replaceAndListSize() {
        var h = HeaderBlock([("a", "1"), ("b", "22"), ("a", "3")])
        #expect(h.listSize == (1 + 1 + 32) + (1 + 2 + 32) + (1 + 1 + 32))
        h.replace(name: "a", value: "x")
        #expect(h.pairs.map { "\($0.name)=\($0.value)" } == ["a=x", "b=22"])
    }

    @Test func percentEncodingOfGRPCMessage() {
        #expect(FaultResponse.percentEncode("a b%c\né") == "a b%25c%0A%C3%A9")
    }

    @Test func resetCodeMapping() {
        #expect(ProxyStream.mapResetCode(H2ErrorCode.cancel) == H2ErrorCode.cancel)
        #expect(ProxyStream.mapResetCode(H2ErrorCode.refusedStream) == H2ErrorCode.refusedStream)
        #expect(ProxyStream.mapResetCode(H2ErrorCode.flowControlError) == H2ErrorCode.internalError)
        #expect(ProxyStream.mapResetCode(H2ErrorCode.enhanceYourCalm) == H2ErrorCode.enhanceYourCalm)
    }
}

@Suite struct HeaderBlockReplaceTests {
    @Test func replaceKeepsThePositionOfTheFirstField() {
        var h = HeaderBlock([(":method", "POST"), (":authority", "a"), ("x", "1"), (":authority", "dup")])
        h.replace(name: ":authority", value: "b")
        #expect(h.pairs.map { "\($0.name)=\($0.value)" } == [":method=POST", ":authority=b", "x=1"])
        h.replace(name: "y", value: "2")
        #expect(h.pairs.last?.name == "y")
    }

    @Test func integerValues() {
        let h = HeaderBlock([("grpc-status", "14"), ("bad", "1x"), ("empty", "")])
        #expect(h.integer("grpc-status") == 14)
        #expect(h.integer("bad") == nil)
        #expect(h.integer("empty") == nil)
        #expect(h.integer("missing") == nil)
    }
}
