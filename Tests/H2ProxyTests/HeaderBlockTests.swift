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

    /// `removeAll(where:)` compacts in place: the same fields as filtering a copy, the predicate
    /// asked once per field in order, and the field list's capacity kept (no allocation).
    @Test(arguments: SeededRandom.seeds(count: 32))
    func removeAllWhereMatchesAFilter(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var block = HeaderBlock()
        let names = ["a", "bb", "insight-x", "te", "c"]
        for i in 0..<Int(random.next() % 40) {
            block.append(name: names[Int(random.next() % UInt64(names.count))], value: "v\(i)")
        }
        let before = (0..<block.count).map { (block.nameString(at: $0), block.valueString(at: $0)) }
        let drop = (0..<block.count).map { _ in random.next() % 3 == 0 }
        let capacity = block.fields.capacity
        var asked: [Int] = []
        block.removeAll { b, i in
            asked.append(i)
            #expect(b.nameString(at: i) == before[i].0)
            return drop[i]
        }
        let after = (0..<block.count).map { (block.nameString(at: $0), block.valueString(at: $0)) }
        let expected = zip(before, drop).filter { !$0.1 }.map(\.0)
        #expect(after.map(\.0) == expected.map(\.0) && after.map(\.1) == expected.map(\.1), "seed \(seed)")
        #expect(asked == Array(0..<before.count), "seed \(seed)")
        #expect(block.fields.capacity == capacity, "seed \(seed)")
    }

    /// `append(contentsOf:)` adds the other block's fields in order with their flags, after the
    /// block's own, whatever either block held or removed before.
    @Test func appendingABlockAddsItsFieldsInOrderWithTheirFlags() {
        var target = HeaderBlock([(":method", "POST"), ("x-drop", "1"), (":path", "/a")])
        target.remove(name: "x-drop")
        var other = HeaderBlock(capacity: 0)
        other.append(name: "x-early", value: "gone")
        other.append(name: "insight-id", value: "abc", flags: 0x1)
        other.append(name: "te", value: "trailers")
        other.remove(name: "x-early")
        let before = other.pairs
        target.append(contentsOf: other)
        #expect(target.pairs.map(\.name) == [":method", ":path", "insight-id", "te"])
        #expect(target.pairs.map(\.value) == ["POST", "/a", "abc", "trailers"])
        #expect(target.withFields { _, fields in fields.map(\.flags) } == [0, 0, 0x1, 0])
        #expect(other.pairs.map(\.name) == before.map(\.name), "the other block is unchanged")
        var empty = HeaderBlock(capacity: 0)
        empty.append(contentsOf: target)
        #expect(empty.pairs.map(\.value) == target.pairs.map(\.value))
        // An empty block made with capacity 0 shares its storage until written: writing one
        // leaves the others empty.
        var a = HeaderBlock(capacity: 0)
        let b = HeaderBlock(capacity: 0)
        a.append(name: "x", value: "y")
        #expect(a.count == 1 && b.isEmpty && b.storageCapacity == 0)
    }
}
