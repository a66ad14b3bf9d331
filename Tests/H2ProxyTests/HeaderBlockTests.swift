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

    @Test func integerValues() {
        let h = HeaderBlock([("grpc-status", "14"), ("bad", "1x"), ("empty", "")])
        #expect(h.integer("grpc-status") == 14)
        #expect(h.integer("bad") == nil)
        #expect(h.integer("empty") == nil)
        #expect(h.integer("missing") == nil)
    }
}
