/// A connection's streams by HTTP/2 stream ID: an open-addressing table with linear probing.
///
/// Every frame of every stream looks its stream up, on both sessions of a proxied call (about a
/// dozen lookups per small request). A `Dictionary<Int32, …>` hashes each key with SipHash: the
/// hashing and the table search were 3.5 % of the sidecar's CPU under small-request load. Here
/// a key is placed by a 64-bit mixing function of the key and a random per-process seed (see
/// ``home(_:)``), so that a client choosing stream IDs cannot predict which ones collide.
/// Stream IDs are 31-bit (RFC 9113 §5.1.1): a slot holds `id | 1 << 31`, and 0 marks it empty.
/// Deletion shifts the following entries back (no tombstones). The table allocates its slots
/// with its first stream (a connection that never had one holds none), grows at half full, and
/// frees them only when told to while empty (``releaseSlotsIfEmpty()``, once a second for a
/// client connection): freeing on every emptying made a connection with bursts of streams free
/// and re-grow its slots per burst.
///
/// A class, held by a `let`, with its slots behind a pointer it owns, so that a lookup retains
/// nothing but the stream it returns (a struct or an array in a class's property is retained
/// and released around each access).
final class StreamTable<Value> {
    private struct Slot {
        var key: UInt32
        var value: Value?
    }

    /// `capacity` slots (a power of two), owned by the table: a lookup reads them through the
    /// pointer, where an array in a class's property would be retained and released per access.
    /// None until the first stream (an idle connection allocates nothing here).
    private var slots: UnsafeMutablePointer<Slot>
    private var capacity: Int
    /// Streams in the table.
    private(set) var count = 0
    /// 64 − log2(slots): a hash's top bits pick the slot.
    private var shift: UInt32
    private let seed = StreamTableSeed.seed

    static var minimumSlots: Int { 8 }

    init() {
        self.capacity = 0
        self.slots = Self.noSlots
        self.shift = 64
    }

    deinit {
        self.freeSlots()
    }

    /// Stands for "no storage" (never read: a table without slots finds nothing).
    private static var noSlots: UnsafeMutablePointer<Slot> {
        UnsafeMutablePointer(bitPattern: MemoryLayout<Slot>.alignment)!
    }

    private func freeSlots() {
        guard self.capacity > 0 else { return }
        self.slots.deinitialize(count: self.capacity)
        self.slots.deallocate()
    }

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<Slot> {
        let slots = UnsafeMutablePointer<Slot>.allocate(capacity: count)
        slots.initialize(repeating: Slot(key: 0, value: nil), count: count)
        return slots
    }

    var isEmpty: Bool { self.count == 0 }

    @inline(__always)
    private static func key(_ id: Int32) -> UInt32 { UInt32(bitPattern: id) | 0x8000_0000 }

    /// The key's home slot: the key plus the process's seed, through SplitMix64's finaliser
    /// (two multiplications), top bits. A bare multiplication (Fibonacci hashing) was tried
    /// first: for some draws of its multiplier the sidecar's own sequential upstream stream IDs
    /// fell into long runs (a hostile tester found draws, about 1 in 10,000, that doubled the
    /// CPU per request with 5,000 streams on one connection). The finaliser mixes every key bit
    /// into the top bits whatever the seed.
    @inline(__always)
    private func home(_ key: UInt32) -> Int {
        Int(truncatingIfNeeded: Self.mix(key, seed: self.seed) >> UInt64(self.shift))
    }

    /// The 64-bit hash of slot key `key` (a stream ID with its top bit set) under `seed`.
    @inline(__always)
    static func mix(_ key: UInt32, seed: UInt64) -> UInt64 {
        var x = UInt64(key) &+ seed
        x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
        return x ^ (x >> 31)
    }

    /// The slot holding `key`, or nil.
    @inline(__always)
    private func find(_ key: UInt32) -> Int? {
        guard self.capacity > 0 else { return nil }
        let mask = self.capacity - 1
        var i = self.home(key)
        while true {
            let k = self.slots[i].key
            if k == key { return i }
            if k == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    subscript(id: Int32) -> Value? {
        @inline(__always) get {
            guard let i = self.find(Self.key(id)) else { return nil }
            return self.slots[i].value
        }
        set {
            if let newValue {
                self.insert(newValue, for: Self.key(id))
            } else {
                self.removeValue(forKey: id)
            }
        }
    }

    private func insert(_ value: Value, for key: UInt32) {
        if let i = self.find(key) {
            self.slots[i].value = value
            return
        }
        if (self.count + 1) * 2 > self.capacity { self.resize(to: max(Self.minimumSlots, self.capacity * 2)) }
        let mask = self.capacity - 1
        var i = self.home(key)
        while self.slots[i].key != 0 { i = (i + 1) & mask }
        self.slots[i] = Slot(key: key, value: value)
        self.count += 1
    }

    @discardableResult
    func removeValue(forKey id: Int32) -> Value? {
        guard var hole = self.find(Self.key(id)) else { return nil }
        let removed = self.slots[hole].value
        let mask = self.capacity - 1
        // Backward shift: move each following entry of the run into the hole unless its home
        // lies cyclically after the hole (then it is already as close to home as it can be).
        var j = hole
        while true {
            j = (j + 1) & mask
            let k = self.slots[j].key
            if k == 0 { break }
            let h = self.home(k)
            let staysPut = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j)
            if staysPut { continue }
            swap(&self.slots[hole], &self.slots[j])
            hole = j
        }
        self.slots[hole] = Slot(key: 0, value: nil)
        self.count -= 1
        return removed
    }

    /// Frees the slots of a table that has no stream (a client connection's, from the loop's
    /// once-a-second housekeeping): a connection that went idle after a burst gives them back,
    /// and one that is busy does not free and re-grow them between bursts.
    func releaseSlotsIfEmpty() {
        if self.count == 0 && self.capacity > 0 { self.removeAll() }
    }

    /// Empties the table; returns what it held.
    @discardableResult
    func removeAll() -> [Value] {
        let held = self.values
        self.freeSlots()
        self.slots = Self.noSlots
        self.capacity = 0
        self.shift = 64
        self.count = 0
        return held
    }

    /// Puts empty storage of `count` slots in place and returns the old storage's slots moved
    /// out (the caller re-inserts them or drops them).
    @discardableResult
    private func replaceSlots(with count: Int) -> [Slot] {
        var old: [Slot] = []
        old.reserveCapacity(self.count)
        for i in 0..<self.capacity where self.slots[i].key != 0 { old.append(self.slots[i]) }
        self.freeSlots()
        self.slots = Self.allocate(count)
        self.capacity = count
        self.shift = 64 - UInt32(count.trailingZeroBitCount)
        return old
    }

    private func resize(to count: Int) {
        let old = self.replaceSlots(with: count)
        let mask = count - 1
        for slot in old {
            var i = self.home(slot.key)
            while self.slots[i].key != 0 { i = (i + 1) & mask }
            self.slots[i] = slot
        }
    }

    /// Slots in the table (for tests).
    var slotCount: Int { self.capacity }

    /// The streams in the table, in no particular order.
    var values: [Value] {
        var out: [Value] = []
        out.reserveCapacity(self.count)
        for i in 0..<self.capacity where self.slots[i].key != 0 { out.append(self.slots[i].value!) }
        return out
    }

    /// Every stream with its ID, in no particular order.
    var entries: [(id: Int32, value: Value)] {
        var out: [(id: Int32, value: Value)] = []
        out.reserveCapacity(self.count)
        for i in 0..<self.capacity where self.slots[i].key != 0 {
            out.append((Int32(bitPattern: self.slots[i].key & 0x7fff_ffff), self.slots[i].value!))
        }
        return out
    }

    /// The stream IDs in the table, in no particular order.
    var ids: [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(self.count)
        for i in 0..<self.capacity where self.slots[i].key != 0 {
            out.append(Int32(bitPattern: self.slots[i].key & 0x7fff_ffff))
        }
        return out
    }
}

/// The per-process seed of ``StreamTable``'s hash: random, so a client choosing stream IDs
/// cannot predict which ones share a slot.
enum StreamTableSeed {
    static let seed = UInt64.random(in: 0...UInt64.max)
}
