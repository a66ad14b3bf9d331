import Testing

@testable import H2Proxy

@Suite struct HeaderBlockTests {
    @Test func replaceAndListSize() {
        var h = HeaderBlock([("a", "1"), ("b", "22"), ("a", "3")])
        #expect(h.listSize == (1 + 1 + 32) + (1 + 2 + 32) + (1 + 1 + 32))
        h.replace(name: "a", value: "x")
        #expect(h.pairs.map { "\($0.name)=\($0.value)" } == ["a=x", "b=22"])
    }

    @Test func replaceKeepsThePositionOfTheFirstField() {
        var h = HeaderBlock([(":method", "POST"), (":authority", "a"), ("x", "1"), (":authority", "dup")])
        h.replace(name: ":authority", value: "b")
        #expect(h.pairs.map { "\($0.name)=\($0.value)" } == [":method=POST", ":authority=b", "x=1"])
        h.replace(name: "y", value: "2")
        #expect(h.pairs.last?.name == "y")
    }

    @Test func replaceWithBytesKeepsTheFirstFieldsFlagsAndAppendsWithTheGivenOnes() {
        var h = HeaderBlock([(":path", "/a"), ("traceparent", "old"), ("traceparent", "dup")])
        let value: StaticString = "00-new"
        h.replace(
            name: "traceparent", value: UnsafeRawBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount),
            flags: 1)
        #expect(h.pairs.map { "\($0.name)=\($0.value)" } == [":path=/a", "traceparent=00-new"])
        #expect(h.fields[1].flags == 0)
        var empty = HeaderBlock([(":path", "/a")])
        empty.replace(
            name: "traceparent", value: UnsafeRawBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount),
            flags: 1)
        #expect(empty.pairs.last.map { "\($0.name)=\($0.value)" } == "traceparent=00-new")
        #expect(empty.fields.last?.flags == 1)
    }

    @Test func integerValues() {
        let h = HeaderBlock([("grpc-status", "14"), ("bad", "1x"), ("empty", "")])
        #expect(h.integer("grpc-status") == 14)
        #expect(h.integer("bad") == nil)
        #expect(h.integer("empty") == nil)
        #expect(h.integer("missing") == nil)
    }
}
