import Foundation
import H2Proxy
import RawStructuredFieldValues

/// The wire format of Insight's timing protocol (Docs/protocol.md, version 1).
///
/// `insight-hops` (request) and `insight-timing` (response trailer) are RFC 8941 Structured
/// Field Lists. They come from untrusted peers: sizes are bounded, malformed input is
/// reported with a reason and never trusted.
public enum TimingHeaders {
    /// Bytes of one timing header (all its field lines together) that are parsed at all.
    public static let maxFieldBytes = 4096
    /// Items of one timing header that are kept.
    public static let maxEntries = 32

    /// Why a timing header (or one of its items) was ignored; the `reason` label of
    /// `insight_timing_header_errors_total`.
    public enum Problem: String, Sendable, CaseIterable {
        /// Not a valid Structured Field List.
        case malformed
        /// Over ``maxFieldBytes``.
        case tooLarge = "too_large"
        /// Over ``maxEntries`` items; the rest were dropped.
        case tooManyEntries = "too_many_entries"
        /// A list member that is not a token with the expected parameters.
        case invalidItem = "invalid_item"
        /// `insight-hops` already had `hop_limit` entries: this sidecar did not append.
        case hopLimit = "hop_limit"
        /// `insight-chain` names more sidecars than `insight-timing` has entries.
        case incompleteChain = "incomplete_chain"
    }

    /// `nghttp2_nv_flag` `NO_INDEX`: HPACK "never indexed" for fields whose value is new on
    /// every call (`insight-id`, `insight-hops`, `insight-timing`). Indexed, each such value
    /// costs the encoder a dynamic-table entry (allocations on both sides of every hop) and
    /// evicts entries that would have been used again; the flag also travels with the field to
    /// the next hop, which treats it the same way.
    static let neverIndexed: UInt8 = 0x01

    /// Sets `name` to `value` (``HeaderBlock/replace(name:value:)``), as a ``neverIndexed``
    /// field when the block had none.
    static func setPerCall(_ name: StaticString, to value: String, in block: inout HeaderBlock) {
        if block.firstIndex(of: name) == nil {
            block.append(name: name, value: value, flags: Self.neverIndexed)
        } else {
            block.replace(name: name, value: value)
        }
    }

    /// Parses every field line named `name` in `block` as one combined SF List.
    static func parseList(
        _ name: StaticString, in block: HeaderBlock, problems: inout [Problem]
    ) -> [Item]? {
        self.parseListKeepingText(name, in: block, problems: &problems)?.items
    }

    /// Like ``parseList(_:in:problems:)``, and also returns the combined field text when the
    /// whole list was valid, so that a sidecar can append its own item without re-serialising
    /// what it received.
    ///
    /// The plain lists that sidecars write are read by ``TimingListParser``; anything else by
    /// swift-http-structured-headers (the same items either way).
    static func parseListKeepingText(
        _ name: StaticString, in block: HeaderBlock, problems: inout [Problem]
    ) -> (items: [Item], validText: String?)? {
        var lines = 0
        var firstLine = 0
        var combinedCount = 0
        for i in 0..<block.count where block.nameEquals(at: i, name) {
            if lines == 0 { firstLine = i }
            lines += 1
            combinedCount += block.value(at: i).count + (lines > 1 ? 2 : 0)
        }
        guard lines > 0 else { return nil }
        if combinedCount > Self.maxFieldBytes {
            problems.append(.tooLarge)
            return nil
        }
        if lines == 1 {
            // One field line (the usual case): read in place, no combined copy.
            let value = block.value(at: firstLine)
            let fast = value.withContiguousStorageIfAvailable { TimingListParser.items(UnsafeRawBufferPointer($0)) }
            if let items = fast ?? nil {
                return Self.kept(items, text: { String(decoding: value, as: UTF8.self) }, problems: &problems)
            }
            return Self.parseWithLibrary(Array(value), problems: &problems)
        }
        var combined: [UInt8] = []
        combined.reserveCapacity(combinedCount)
        var found = false
        for i in 0..<block.count where block.nameEquals(at: i, name) {
            if found { combined.append(contentsOf: [UInt8(ascii: ","), UInt8(ascii: " ")]) }
            found = true
            combined.append(contentsOf: block.value(at: i))
        }
        if let items = combined.withUnsafeBytes({ TimingListParser.items($0) }) {
            return Self.kept(items, text: { String(decoding: combined, as: UTF8.self) }, problems: &problems)
        }
        return Self.parseWithLibrary(combined, problems: &problems)
    }

    /// The fast path for a timing header as sidecars write it: one field line named `name`,
    /// read in place as a plain list (``TimingListParser/plainItems(_:)``) of at most
    /// ``maxEntries`` items, handed to `body` with the value's bytes. `nil` when there is no such
    /// line, several, a value over ``maxFieldBytes`` or outside the parser's subset, more items,
    /// or when `body` returns `nil` (an item it does not accept): the caller then reads the
    /// header with ``parseListKeepingText(_:in:problems:)``, which reports the problems. Where
    /// it returns, it found what that reading finds, with no problem to report.
    static func withPlainList<R>(
        _ name: StaticString, in block: HeaderBlock,
        _ body: ([TimingListParser.PlainItem], UnsafeRawBufferPointer) -> R?
    ) -> R? {
        var items: [TimingListParser.PlainItem] = []
        return Self.withPlainList(name, in: block, scratch: &items, body)
    }

    /// ``withPlainList(_:in:_:)`` reading the items into `scratch` (its capacity kept for the
    /// next list: the timing observer reads one per stream with its loop's array).
    static func withPlainList<R>(
        _ name: StaticString, in block: HeaderBlock, scratch: inout [TimingListParser.PlainItem],
        _ body: ([TimingListParser.PlainItem], UnsafeRawBufferPointer) -> R?
    ) -> R? {
        var line = -1
        for i in 0..<block.count where block.nameEquals(at: i, name) {
            guard line < 0 else { return nil }
            line = i
        }
        guard line >= 0 else { return nil }
        let value = block.value(at: line)
        guard value.count <= Self.maxFieldBytes else { return nil }
        let result: R?? = value.withContiguousStorageIfAvailable { storage in
            let bytes = UnsafeRawBufferPointer(storage)
            guard TimingListParser.plainItems(bytes, into: &scratch), !scratch.isEmpty,
                scratch.count <= Self.maxEntries
            else { return nil }
            return body(scratch, bytes)
        }
        return result ?? nil
    }

    /// Appends `own` to the one field line `name` of `block` (`value, own`), keeping the
    /// field's position and flags: what ``appending(_:to:items:)`` and `replace` do with the
    /// received text, without making a `String` of it.
    static func appendItem(_ own: UnsafeRawBufferPointer, toLine name: StaticString, in block: inout HeaderBlock) {
        guard let line = block.firstIndex(of: name) else { return }
        let count = block.value(at: line).count
        withUnsafeTemporaryAllocation(byteCount: count + 2 + own.count, alignment: 1) { out in
            // Copied in a call of its own: the value's view (a reference to the block's
            // storage) is gone before `replace` writes to that storage.
            Self.copyValue(of: block, at: line, to: out.baseAddress!)
            out[count] = UInt8(ascii: ",")
            out[count + 1] = UInt8(ascii: " ")
            if own.count > 0 {
                (out.baseAddress! + count + 2).copyMemory(from: own.baseAddress!, byteCount: own.count)
            }
            block.replace(name: name, value: UnsafeRawBufferPointer(out), flags: 0)
        }
    }

    private static func copyValue(of block: HeaderBlock, at line: Int, to target: UnsafeMutableRawPointer) {
        let value = block.value(at: line)
        var offset = 0
        _ = value.withContiguousStorageIfAvailable { bytes in
            target.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            offset = bytes.count
        }
        if offset == 0 {
            for byte in value {
                target.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
                offset += 1
            }
        }
    }

    /// The first ``maxEntries`` of `items` (all of them plain items, from ``TimingListParser``),
    /// and the field text when none was dropped.
    private static func kept(
        _ items: [Item], text: () -> String, problems: inout [Problem]
    ) -> (items: [Item], validText: String?) {
        guard items.count <= Self.maxEntries else {
            problems.append(.tooManyEntries)
            return (Array(items.prefix(Self.maxEntries)), nil)
        }
        return (items, items.isEmpty ? nil : text())
    }

    /// The list as swift-http-structured-headers reads it: any valid RFC 9651 List.
    static func parseWithLibrary(
        _ combined: [UInt8], problems: inout [Problem]
    ) -> (items: [Item], validText: String?)? {
        var parser = StructuredFieldValueParser(combined)
        let list: [ItemOrInnerList]
        do {
            list = try parser.parseListFieldValue()
        } catch {
            problems.append(.malformed)
            return nil
        }
        var items: [Item] = []
        items.reserveCapacity(min(list.count, Self.maxEntries))
        var clean = true
        for member in list {
            guard case .item(let item) = member else {
                problems.append(.invalidItem)
                clean = false
                continue
            }
            if items.count == Self.maxEntries {
                problems.append(.tooManyEntries)
                clean = false
                break
            }
            items.append(item)
        }
        return (items, clean && !items.isEmpty ? String(decoding: combined, as: UTF8.self) : nil)
    }

    /// `existing, item` when the received list was valid; else the serialised `items` and `item`.
    static func appending(_ own: String, to existing: String?, items: [Item]) -> String? {
        if let existing { return existing + ", " + own }
        if items.isEmpty { return own }
        guard let rest = Self.serialize(items) else { return own }
        return rest + ", " + own
    }

    static func serialize(_ items: [Item]) -> String? {
        var serializer = StructuredFieldValueSerializer()
        guard let bytes = try? serializer.writeListFieldValue(items.map { .item($0) }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A token for a hop name (validated names are tokens; anything else is quoted).
    static func hopItem(_ hop: String, _ parameters: OrderedMap<String, RFC9651BareItem>) -> Item {
        Item(bareItem: hop.isStructuredToken ? .token(hop) : .string(hop), parameters: parameters)
    }

    static func hopName(_ item: Item) -> String? {
        switch item.rfc9651BareItem {
        case .token(let t): t
        case .string(let s) where !s.isEmpty && s.utf8.count <= 64: s
        default: nil
        }
    }

    /// Milliseconds as an SF Decimal with three fractional digits (µs resolution).
    static func milliseconds(fromNanoseconds ns: Int64) -> RFC9651BareItem {
        let micros = max(0, min(ns / 1000, 999_999_999_999))
        return .decimal(PseudoDecimal(mantissa: Int(micros), exponent: -3))
    }

    static func number(_ item: RFC9651BareItem?) -> Double? {
        switch item {
        case .decimal(let d): Double(d)
        case .integer(let i): Double(i)
        default: nil
        }
    }
}

extension String {
    /// RFC 8941 §3.3.4 token: starts with ALPHA or "*", then tchar, ":" or "/".
    var isStructuredToken: Bool {
        guard let first = self.utf8.first,
            (first >= 0x41 && first <= 0x5A) || (first >= 0x61 && first <= 0x7A) || first == 0x2A
        else { return false }
        return self.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                || tokenPunctuation.contains($0)
        }
    }
}

/// RFC 9110 tchar punctuation plus ":" and "/" (allowed after the first token character).
private let tokenPunctuation: [UInt8] = Array("!#$%&'*+-.^_`|~:/".utf8)
