import Testing

@testable import H2Proxy

/// ``StreamTable`` against `Dictionary` as the model: every lookup, insert and removal agrees,
/// under random interleavings and under stream IDs chosen to collide.
@Suite struct StreamTableTests {
    final class Stream {
        let id: Int32
        init(_ id: Int32) { self.id = id }
    }

    private static func check(_ table: StreamTable<Stream>, _ model: [Int32: Stream], _ seed: UInt64) {
        #expect(table.count == model.count, "seed \(seed)")
        #expect(Set(table.ids) == Set(model.keys), "seed \(seed)")
        #expect(Set(table.values.map(ObjectIdentifier.init)) == Set(model.values.map(ObjectIdentifier.init)))
        for (id, stream) in model { #expect(table[id] === stream, "seed \(seed) id \(id)") }
    }

    /// Streams opened in increasing odd IDs (as a client opens them) and closed in any order,
    /// lookups of open, closed and never-seen IDs in between.
    @Test(arguments: SeededRandom.seeds(count: 8))
    func randomOpensAndClosesAgreeWithADictionary(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let table = StreamTable<Stream>()
        var model: [Int32: Stream] = [:]
        var nextID: Int32 = 1
        for step in 0..<4000 {
            switch random.next() % 10 {
            case 0..<4:
                let stream = Stream(nextID)
                table[nextID] = stream
                model[nextID] = stream
                nextID += 2 * Int32(1 + random.next() % 3)
            case 4..<7:
                guard let id = model.keys.randomElement(using: &random) else { continue }
                #expect(table.removeValue(forKey: id) === model.removeValue(forKey: id), "seed \(seed) step \(step)")
            case 7:
                let id = Int32(random.next() % UInt64(nextID + 8))
                #expect(table[id] === model[id], "seed \(seed) step \(step)")
                #expect(table.removeValue(forKey: id) === model.removeValue(forKey: id))
            case 8:
                guard let id = model.keys.randomElement(using: &random) else { continue }
                let replacement = Stream(id)
                table[id] = replacement
                model[id] = replacement
            default:
                if random.next() % 50 == 0 {
                    let held = table.removeAll()
                    #expect(held.count == model.count)
                    model.removeAll()
                }
            }
            if step % 97 == 0 { Self.check(table, model, seed) }
        }
        Self.check(table, model, seed)
        for id in model.keys { table[id] = nil }
        #expect(table.isEmpty && table.slotCount <= 4 * StreamTable<Stream>.minimumSlots)
    }

    /// IDs that all land in one slot (found by trying, as a client that knew the multiplier
    /// could) still each find their stream, and removing from the middle of the run keeps the
    /// rest reachable.
    @Test func collidingIDsStayReachable() {
        let table = StreamTable<Stream>()
        var model: [Int32: Stream] = [:]
        // Fill to a fixed size first so that the slot count stays put while colliding IDs go in.
        for id in stride(from: Int32(1), through: 39, by: 2) { table[id] = Stream(id) }
        for id in stride(from: Int32(1), through: 39, by: 2) { model[id] = table[id] }
        let slots = table.slotCount
        var colliding: [Int32] = []
        var id: Int32 = 1001
        while colliding.count < 8 && id < 5_000_001 {
            if Self.sameHome(id, 1001, slots: slots) { colliding.append(id) }
            id += 2
        }
        for id in colliding.prefix(8) {
            if table.count * 2 + 2 > slots { break }
            let s = Stream(id)
            table[id] = s
            model[id] = s
        }
        #expect(table.slotCount == slots && model.count == 28)
        Self.check(table, model, 0)
        for id in colliding.prefix(4) {
            #expect(table.removeValue(forKey: id) === model.removeValue(forKey: id))
            Self.check(table, model, 0)
        }
    }

    /// Whether two IDs hash to the same slot in a table of `slots` slots.
    private static func sameHome(_ a: Int32, _ b: Int32, slots: Int) -> Bool {
        let shift = 32 - UInt32(slots.trailingZeroBitCount)
        let m = StreamTableSeed.multiplier
        let ka = UInt32(bitPattern: a) | 0x8000_0000
        let kb = UInt32(bitPattern: b) | 0x8000_0000
        return (ka &* m) >> shift == (kb &* m) >> shift
    }

    /// A table that grew for a burst gives its slots back once it is empty again.
    @Test func aTableGivesItsSlotsBackWhenItEmpties() {
        let table = StreamTable<Stream>()
        for id in stride(from: Int32(1), through: 999, by: 2) { table[id] = Stream(id) }
        #expect(table.count == 500 && table.slotCount >= 1000)
        for id in stride(from: Int32(1), through: 997, by: 2) { table[id] = nil }
        #expect(table.count == 1 && table.slotCount >= 1000)
        table[999] = nil
        #expect(table.isEmpty && table.slotCount == 0)
        // A new table holds no slots until its first stream; a small one keeps its slots empty.
        let fresh = StreamTable<Stream>()
        #expect(fresh.slotCount == 0 && fresh[1] == nil && fresh.removeValue(forKey: 1) == nil)
        fresh[1] = Stream(1)
        fresh[1] = nil
        #expect(fresh.isEmpty && fresh.slotCount == StreamTable<Stream>.minimumSlots)
        #expect(fresh.removeAll().isEmpty && fresh.slotCount == 0)
    }
}
