import NIOCore

/// One HTTP/2 header list (a HEADERS block or trailers), kept as bytes.
///
/// Every name and value lives in one `ByteBuffer`; a field is a pair of byte ranges into it,
/// so forwarding a header list allocates once per block, never once per header, and no
/// `String` is built unless a caller asks for one.
public struct HeaderBlock: Sendable {
    public struct Field: Sendable {
        @usableFromInline var nameOffset: UInt32
        @usableFromInline var nameLength: UInt32
        @usableFromInline var valueOffset: UInt32
        @usableFromInline var valueLength: UInt32
        /// nghttp2's `nghttp2_nv_flag` bits (`NO_INDEX` for sensitive fields).
        public var flags: UInt8
    }

    @usableFromInline var storage: ByteBuffer
    @usableFromInline var fields: [Field]

    /// An empty block with room for `capacity` bytes of names and values (and then 16 fields).
    /// With `capacity` 0 nothing is allocated until a field is added: a block that may stay
    /// empty (trailers only an observer might add) costs nothing.
    public init(capacity: Int = 512) {
        // A `ByteBuffer` of capacity 0 still allocates its storage object and a zero-byte
        // block (two mallocs): an empty block shares one, copied on its first write.
        self.storage = capacity > 0 ? ByteBufferAllocator().buffer(capacity: capacity) : Self.emptyStorage
        self.fields = []
        if capacity > 0 { self.fields.reserveCapacity(16) }
    }

    /// The storage every block made with capacity 0 starts with (never written: a write to a
    /// shared `ByteBuffer` copies it first).
    private static let emptyStorage = ByteBufferAllocator().buffer(capacity: 0)

    /// Appends every field of `other` (names, values and flags, in order) with one copy of
    /// its bytes.
    public mutating func append(contentsOf other: HeaderBlock) {
        let shift = Int64(self.storage.writerIndex) - Int64(other.storage.readerIndex)
        self.storage.writeImmutableBuffer(other.storage)
        self.fields.reserveCapacity(self.fields.count + other.fields.count)
        for f in other.fields {
            self.fields.append(
                Field(
                    nameOffset: UInt32(Int64(f.nameOffset) + shift), nameLength: f.nameLength,
                    valueOffset: UInt32(Int64(f.valueOffset) + shift), valueLength: f.valueLength, flags: f.flags))
        }
    }

    /// Empties the block for reuse, keeping its memory: no allocation if no copy of it is alive
    /// (one that is still held elsewhere makes the two part, as any other change would).
    mutating func removeAll() {
        self.storage.clear()
        self.fields.removeAll(keepingCapacity: true)
    }

    /// Bytes the block can hold before its storage grows.
    var storageCapacity: Int { self.storage.capacity }

    public var count: Int { self.fields.count }
    public var isEmpty: Bool { self.fields.isEmpty }

    /// The HTTP/2 header list size (RFC 9113 §6.5.2): names + values + 32 per field.
    public var listSize: Int {
        var size = 0
        for field in self.fields { size += Int(field.nameLength) + Int(field.valueLength) + 32 }
        return size
    }

    /// Copies both fields with one write into the storage (one exclusivity-checked access to
    /// the buffer instead of two: this runs once per header field nghttp2 decodes).
    public mutating func append(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, flags: UInt8 = 0) {
        let nameOffset = self.storage.writerIndex
        let valueOffset = nameOffset + name.count
        self.storage.writeWithUnsafeMutableBytes(minimumWritableBytes: name.count + value.count) { target in
            if let base = name.baseAddress, name.count > 0 {
                target.baseAddress!.copyMemory(from: base, byteCount: name.count)
            }
            if let base = value.baseAddress, value.count > 0 {
                (target.baseAddress! + name.count).copyMemory(from: base, byteCount: value.count)
            }
            return name.count + value.count
        }
        self.recordField(nameOffset, name.count, valueOffset, value.count, flags)
    }

    public mutating func append(name: String, value: String, flags: UInt8 = 0) {
        let nameOffset = self.storage.writerIndex
        let nameLength = self.storage.writeString(name)
        let valueOffset = self.storage.writerIndex
        let valueLength = self.storage.writeString(value)
        self.recordField(nameOffset, nameLength, valueOffset, valueLength, flags)
    }

    /// Adds the field whose bytes were just written at these offsets.
    private mutating func recordField(
        _ nameOffset: Int, _ nameLength: Int, _ valueOffset: Int, _ valueLength: Int, _ flags: UInt8
    ) {
        self.fields.append(
            Field(
                nameOffset: UInt32(nameOffset), nameLength: UInt32(nameLength),
                valueOffset: UInt32(valueOffset), valueLength: UInt32(valueLength), flags: flags))
    }

    /// Name bytes of field `index`.
    public func name(at index: Int) -> ByteBufferView {
        let f = self.fields[index]
        return self.storage.viewBytes(at: Int(f.nameOffset), length: Int(f.nameLength))!
    }

    /// Value bytes of field `index`.
    public func value(at index: Int) -> ByteBufferView {
        let f = self.fields[index]
        return self.storage.viewBytes(at: Int(f.valueOffset), length: Int(f.valueLength))!
    }

    public func nameString(at index: Int) -> String { String(decoding: self.name(at: index), as: UTF8.self) }
    public func valueString(at index: Int) -> String { String(decoding: self.value(at: index), as: UTF8.self) }

    /// Whether field `index`'s name is exactly `name` (names are lower case on the wire in HTTP/2).
    public func nameEquals(at index: Int, _ name: StaticString) -> Bool {
        let f = self.fields[index]
        guard Int(f.nameLength) == name.utf8CodeUnitCount else { return false }
        return self.storage.withUnsafeReadableBytes { raw in
            let start = Int(f.nameOffset) - self.storage.readerIndex
            return memcmpBytes(raw.baseAddress! + start, name.utf8Start, Int(f.nameLength))
        }
    }

    public func valueEquals(at index: Int, _ value: StaticString) -> Bool {
        let f = self.fields[index]
        guard Int(f.valueLength) == value.utf8CodeUnitCount else { return false }
        return self.storage.withUnsafeReadableBytes { raw in
            let start = Int(f.valueOffset) - self.storage.readerIndex
            return memcmpBytes(raw.baseAddress! + start, value.utf8Start, Int(f.valueLength))
        }
    }

    /// Whether field `index`'s value is `value` ignoring ASCII letter case (`value` lower case).
    public func valueEqualsIgnoringCase(at index: Int, _ value: StaticString) -> Bool {
        let f = self.fields[index]
        guard Int(f.valueLength) == value.utf8CodeUnitCount else { return false }
        return self.storage.withUnsafeReadableBytes { raw in
            let start = Int(f.valueOffset) - self.storage.readerIndex
            for i in 0..<Int(f.valueLength) {
                var c = raw[start + i]
                if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c += 32 }
                if c != value.utf8Start[i] { return false }
            }
            return true
        }
    }

    /// Whether field `index`'s value starts with `prefix`.
    public func valueHasPrefix(at index: Int, _ prefix: StaticString) -> Bool {
        let f = self.fields[index]
        guard Int(f.valueLength) >= prefix.utf8CodeUnitCount else { return false }
        return self.storage.withUnsafeReadableBytes { raw in
            let start = Int(f.valueOffset) - self.storage.readerIndex
            return memcmpBytes(raw.baseAddress! + start, prefix.utf8Start, prefix.utf8CodeUnitCount)
        }
    }

    /// The index of the first field named `name`. Fields are told apart by their name's
    /// length first; the storage is read only for those of the same length (one access for
    /// the whole scan: the timing observer looks up about ten names per stream).
    public func firstIndex(of name: StaticString) -> Int? {
        let length = name.utf8CodeUnitCount
        return self.fields.withUnsafeBufferPointer { fields -> Int? in
            guard var i = fields.firstIndex(where: { Int($0.nameLength) == length }) else { return nil }
            return self.storage.withUnsafeReadableBytes { raw -> Int? in
                let base = raw.baseAddress! - self.storage.readerIndex
                while i < fields.count {
                    let f = fields[i]
                    if Int(f.nameLength) == length && memcmpBytes(base + Int(f.nameOffset), name.utf8Start, length) {
                        return i
                    }
                    i += 1
                }
                return nil
            }
        }
    }

    /// The first value of `name` as a `String`; for control-plane use, not the data path.
    public func first(_ name: StaticString) -> String? {
        self.firstIndex(of: name).map { self.valueString(at: $0) }
    }

    /// Removes every field for which `shouldRemove` is true. Storage bytes are left in place.
    /// Removes the fields for which `shouldRemove` (asked once per field, in order) is true.
    ///
    /// In place: nothing is allocated, and the field list keeps its capacity. (A new array of
    /// exactly the kept fields cost an allocation on every `replace`, and the next `append`
    /// grew it again: two or three allocations per request at a hop with inner hops.)
    public mutating func removeAll(where shouldRemove: (HeaderBlock, Int) -> Bool) {
        let count = self.fields.count
        var first = 0
        while first < count, !shouldRemove(self, first) { first += 1 }
        guard first < count else { return }
        // Every field after the first removed one is asked before any is moved: the predicate
        // reads the block as it was.
        withUnsafeTemporaryAllocation(of: Bool.self, capacity: count) { remove in
            for i in (first + 1)..<count { remove[i] = shouldRemove(self, i) }
            var kept = first
            for i in (first + 1)..<count where !remove[i] {
                self.fields[kept] = self.fields[i]
                kept += 1
            }
            self.fields.removeLast(count - kept)
        }
    }

    public mutating func remove(name: StaticString) {
        guard self.firstIndex(of: name) != nil else { return }
        self.removeAll { block, i in block.nameEquals(at: i, name) }
    }

    /// Sets `name` to `value`: the first field of that name keeps its position (pseudo-headers
    /// must stay in front), later ones are removed; appended if there was none.
    public mutating func replace(name: StaticString, value: String) {
        var value = value
        value.withUTF8 { self.replace(name: name, value: UnsafeRawBufferPointer($0), flags: 0) }
    }

    /// Like ``replace(name:value:)`` with the value's bytes (no `String`); `flags` (nghttp2's
    /// `nghttp2_nv_flag` bits) apply when the field is appended, a replaced one keeps its own.
    public mutating func replace(name: StaticString, value: UnsafeRawBufferPointer, flags: UInt8) {
        guard let first = self.firstIndex(of: name) else {
            self.append(
                name: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), value: value,
                flags: flags)
            return
        }
        let valueOffset = self.storage.writerIndex
        let valueLength = self.storage.writeBytes(value)
        self.fields[first].valueOffset = UInt32(valueOffset)
        self.fields[first].valueLength = UInt32(valueLength)
        var seen = false
        self.removeAll { block, i in
            guard block.nameEquals(at: i, name) else { return false }
            defer { seen = true }
            return seen
        }
    }

    public mutating func append(name: StaticString, value: String, flags: UInt8 = 0) {
        let nameOffset = self.storage.writerIndex
        let nameLength = self.storage.writeStaticString(name)
        let valueOffset = self.storage.writerIndex
        let valueLength = self.storage.writeString(value)
        self.recordField(nameOffset, nameLength, valueOffset, valueLength, flags)
    }

    /// The first value of `name` as a non-negative decimal integer, without building a String.
    public func integer(_ name: StaticString) -> Int? {
        guard let i = self.firstIndex(of: name) else { return nil }
        let f = self.fields[i]
        // Read in place: a `ByteBufferView` of the value retained and released the storage.
        return self.storage.withUnsafeReadableBytes { raw -> Int? in
            let start = Int(f.valueOffset) - self.storage.readerIndex
            var v = 0
            for byte in UnsafeRawBufferPointer(rebasing: raw[start..<(start + Int(f.valueLength))]) {
                guard byte >= 0x30 && byte <= 0x39, v < Int.max / 10 - 9 else { return nil }
                v = v * 10 + Int(byte - 0x30)
            }
            return f.valueLength > 0 ? v : nil
        }
    }

    /// Calls `body` with the raw storage and the field table; used to hand fields to nghttp2
    /// without copying.
    func withFields<R>(_ body: (UnsafeRawBufferPointer, [Field]) throws -> R) rethrows -> R {
        try self.storage.withUnsafeReadableBytes { raw in
            try body(raw, self.fields)
        }
    }

    /// Offset of the readable region, to translate field offsets into `withFields` positions.
    var storageBase: Int { self.storage.readerIndex }

    /// Fields as `(name, value)` strings, for tests, logs and the control plane.
    public var pairs: [(name: String, value: String)] {
        self.fields.indices.map { (self.nameString(at: $0), self.valueString(at: $0)) }
    }
}

extension HeaderBlock {
    public init(_ pairs: [(String, String)]) {
        self.init()
        for (n, v) in pairs { self.append(name: n, value: v) }
    }
}

@inline(__always)
func memcmpBytes(_ a: UnsafeRawPointer, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b[i] { return false }
        i += 1
    }
    return true
}
