import Foundation
import RawStructuredFieldValues

/// A byte-level parser for the plain Structured Field Lists that sidecars write in
/// `insight-hops`, `insight-chain` and `insight-timing`; anything else is left to the library.
///
/// The timing headers are what Insight exists for, and they are parsed on every probe and on
/// every proxied response that carries inner hops' timing. swift-http-structured-headers'
/// parser is generic over its input and is not specialised across the module boundary, so each
/// byte it reads goes through generic metadata and witness tables: on the probe path it was
/// 15 % of the prober's CPU (Docs/performance.md, "Probes, second pass"). This parser reads a
/// strict subset of RFC 9651 Lists: items whose bare item is a token, a string without escapes,
/// or an unsigned Integer or Decimal, with up to three distinct parameters of the same kinds
/// (or the Boolean `true` of a bare key). It returns `nil` for anything outside that subset,
/// and the caller then uses the library, which stays the reference: where this parser accepts,
/// it returns exactly the items the library does (`TimingListParserTests`, golden and seeded
/// random inputs; the `FuzzTimingHeaders` target on every input it is given).
enum TimingListParser {
    /// The list's items, or `nil` when `bytes` are not in the subset (or not a valid list).
    static func items(_ bytes: UnsafeRawBufferPointer) -> [Item]? {
        Self.plainItems(bytes)?.map { $0.item(in: bytes) }
    }

    /// The list's items as byte ranges of `bytes` and numbers (``PlainItem``), or `nil` when
    /// `bytes` are not in the subset: the same grammar as ``items(_:)``, without a `String`,
    /// an `Item` or the library's parameter map per item. The timing observer reads what it
    /// needs from these (``PlainItem/hopName(in:)``, ``TimingEntry/init(_:in:)``); building
    /// the library's items and reading their parameters through its generic, unspecialised
    /// map was most of what a hop with inner hops spent on timing (Docs/performance.md).
    static func plainItems(_ bytes: UnsafeRawBufferPointer) -> [PlainItem]? {
        var items: [PlainItem] = []
        return Self.plainItems(bytes, into: &items) ? items : nil
    }

    /// ``plainItems(_:)`` into `items` (emptied first, its capacity kept): a caller that reads
    /// a list per stream reuses one array instead of allocating one each time. `false` (and
    /// `items` in no particular state) when `bytes` are not in the subset.
    static func plainItems(_ bytes: UnsafeRawBufferPointer, into items: inout [PlainItem]) -> Bool {
        items.removeAll(keepingCapacity: true)
        var cursor = Cursor(bytes: bytes)
        cursor.skipSpaces()
        while !cursor.atEnd {
            guard let item = cursor.item() else { return false }
            items.append(item)
            cursor.skipOptionalWhitespace()
            if cursor.atEnd { break }
            guard cursor.peek == comma else { return false }
            cursor.index += 1
            cursor.skipOptionalWhitespace()
            // A trailing comma is not a list.
            guard !cursor.atEnd else { return false }
        }
        return true
    }

    /// One item of a plain list: its bare item and up to three parameters, as byte ranges of
    /// the field value it was read from and numbers.
    struct PlainItem {
        enum Value: Equatable {
            case token(Range<Int>)
            /// A string without escapes: the bytes between the quotes.
            case string(Range<Int>)
            case integer(Int64)
            /// `mantissa` × 10^`exponent` (`exponent` −1 to −3), as the library keeps it.
            case decimal(mantissa: Int64, exponent: Int)
            /// A bare key: the Boolean `true`.
            case `true`
        }

        var bare: Value
        var parameterCount = 0
        var parameters: (Parameter, Parameter, Parameter) = (.none, .none, .none)

        struct Parameter {
            var key: Range<Int>
            var value: Value
            static let none = Parameter(key: 0..<0, value: .true)
        }

        func parameter(_ i: Int) -> Parameter {
            switch i {
            case 0: self.parameters.0
            case 1: self.parameters.1
            default: self.parameters.2
            }
        }

        /// The value of parameter `key`, if the item has it.
        func parameter(_ key: StaticString, in bytes: UnsafeRawBufferPointer) -> Value? {
            let name = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
            for i in 0..<self.parameterCount {
                let p = self.parameter(i)
                if p.key.count == name.count,
                    memcmp(bytes.baseAddress! + p.key.lowerBound, name.baseAddress!, name.count) == 0
                {
                    return p.value
                }
            }
            return nil
        }

        /// ``TimingHeaders/hopName(_:)`` of this item: a token, or a string of 1 to 64 bytes.
        func hopName(in bytes: UnsafeRawBufferPointer) -> String? {
            guard self.hasHopName else { return nil }
            switch self.bare {
            case .token(let r), .string(let r): return Self.text(r, in: bytes)
            default: return nil
            }
        }

        /// Whether ``hopName(in:)`` is not `nil` (read without making the `String`).
        var hasHopName: Bool {
            switch self.bare {
            case .token: true
            case .string(let r): !r.isEmpty && r.count <= 64
            default: false
            }
        }

        /// Whether the library's reading of this item is a valid ``HopStamp``: a hop name, a
        /// `region` that is a token or string if any, a `t` that is a string or integer if any.
        func isHopStamp(in bytes: UnsafeRawBufferPointer) -> Bool {
            guard self.hasHopName else { return false }
            switch self.parameter("region", in: bytes) {
            case nil, .token, .string: break
            default: return false
            }
            switch self.parameter("t", in: bytes) {
            case nil, .string, .integer: return true
            default: return false
            }
        }

        /// ``TimingHeaders/number(_:)`` of `value`: the same `Double` as the library's
        /// `Double(PseudoDecimal)` (mantissa × `pow(10, exponent)`).
        static func number(_ value: Value?) -> Double? {
            switch value {
            case .integer(let i): Double(i)
            case .decimal(let m, let e): Double(m) * powersOfTen[-e]
            default: nil
            }
        }

        /// `pow(10, -k)` for k = 0...3, computed as the library computes it.
        private static let powersOfTen: [Double] = (0...3).map { pow(10, Double(-$0)) }

        static func text(_ range: Range<Int>, in bytes: UnsafeRawBufferPointer) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }

        /// The library's item for this one.
        func item(in bytes: UnsafeRawBufferPointer) -> Item {
            func bare(_ v: Value) -> RFC9651BareItem {
                switch v {
                case .token(let r): .token(Self.text(r, in: bytes))
                case .string(let r): .string(Self.text(r, in: bytes))
                case .integer(let i): .integer(i)
                case .decimal(let m, let e): .decimal(PseudoDecimal(mantissa: Int(m), exponent: e))
                case .true: .bool(true)
                }
            }
            func key(_ p: Parameter) -> String { Self.text(p.key, in: bytes) }
            // The parameters are handed to the library's map in one call: each of its generic,
            // unspecialised `subscript` setters costs more than parsing the item.
            let map: OrderedMap<String, RFC9651BareItem>
            let (a, b, c) = self.parameters
            switch self.parameterCount {
            case 1: map = [key(a): bare(a.value)]
            case 2: map = [key(a): bare(a.value), key(b): bare(b.value)]
            case 3: map = [key(a): bare(a.value), key(b): bare(b.value), key(c): bare(c.value)]
            default: map = OrderedMap()
            }
            return Item(bareItem: bare(self.bare), parameters: map)
        }
    }

    /// The read position in one field value; every `mutating func` returns `nil` (fall back)
    /// at the first byte outside the subset.
    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        var atEnd: Bool { self.index >= self.bytes.count }
        var peek: UInt8? { self.atEnd ? nil : self.bytes[self.index] }

        /// RFC 9651 §4.2: leading and trailing SP of the whole value, SP after `;`.
        mutating func skipSpaces() {
            while self.index < self.bytes.count, self.bytes[self.index] == space { self.index += 1 }
        }

        /// OWS (SP or HTAB) around a list's commas.
        mutating func skipOptionalWhitespace() {
            while self.index < self.bytes.count, self.bytes[self.index] == space || self.bytes[self.index] == tab {
                self.index += 1
            }
        }

        /// An item with at most three parameters, none repeated (sidecars write two or three:
        /// `region` and `t`, or `dur`, `ttfb` and `self`); more, or a repeated key, is left to
        /// the library.
        mutating func item() -> PlainItem? {
            guard let bare = self.bareItem() else { return nil }
            var item = PlainItem(bare: bare)
            while self.peek == semicolon {
                self.index += 1
                self.skipSpaces()
                guard item.parameterCount < 3, let key = self.key() else { return nil }
                var value = PlainItem.Value.true
                if self.peek == equals {
                    self.index += 1
                    guard let v = self.bareItem() else { return nil }
                    value = v
                }
                for i in 0..<item.parameterCount {
                    let other = item.parameter(i).key
                    if other.count == key.count,
                        memcmp(
                            self.bytes.baseAddress! + other.lowerBound, self.bytes.baseAddress! + key.lowerBound,
                            key.count)
                            == 0
                    {
                        return nil
                    }
                }
                let p = PlainItem.Parameter(key: key, value: value)
                switch item.parameterCount {
                case 0: item.parameters.0 = p
                case 1: item.parameters.1 = p
                default: item.parameters.2 = p
                }
                item.parameterCount += 1
            }
            return item
        }

        private mutating func bareItem() -> PlainItem.Value? {
            guard let first = self.peek else { return nil }
            if isAlpha(first) || first == asterisk { return self.token() }
            if first == quote { return self.string() }
            if isDigit(first) { return self.number() }
            return nil
        }

        /// RFC 9651 §4.2.6: ALPHA or `*`, then tchar, `:` or `/`.
        private mutating func token() -> PlainItem.Value {
            let start = self.index
            self.index += 1
            while self.index < self.bytes.count, isTokenCharacter(self.bytes[self.index]) { self.index += 1 }
            return .token(start..<self.index)
        }

        /// RFC 9651 §4.2.5 without escapes: printable ASCII up to the closing quote.
        private mutating func string() -> PlainItem.Value? {
            let start = self.index + 1
            var i = start
            while i < self.bytes.count {
                let c = self.bytes[i]
                if c == quote {
                    self.index = i + 1
                    return .string(start..<i)
                }
                // An escape (left to the library) or a byte no string may hold.
                guard c >= 0x20, c < 0x7F, c != backslash else { return nil }
                i += 1
            }
            return nil
        }

        /// RFC 9651 §4.2.4 without a sign: an Integer of up to 15 digits, or a Decimal of up
        /// to 12 integer digits and 1 to 3 fractional ones (a mantissa and an exponent, as the
        /// library keeps them: `1.50` is 150 × 10⁻²).
        private mutating func number() -> PlainItem.Value? {
            var mantissa: Int64 = 0
            var integerDigits = 0
            while self.index < self.bytes.count, isDigit(self.bytes[self.index]) {
                mantissa = mantissa * 10 + Int64(self.bytes[self.index] &- zero)
                integerDigits += 1
                guard integerDigits <= 15 else { return nil }
                self.index += 1
            }
            guard self.peek == period else { return .integer(mantissa) }
            guard integerDigits <= 12 else { return nil }
            self.index += 1
            var fractionDigits = 0
            while self.index < self.bytes.count, isDigit(self.bytes[self.index]) {
                mantissa = mantissa * 10 + Int64(self.bytes[self.index] &- zero)
                fractionDigits += 1
                guard fractionDigits <= 3 else { return nil }
                self.index += 1
            }
            guard fractionDigits > 0 else { return nil }
            return .decimal(mantissa: mantissa, exponent: -fractionDigits)
        }

        /// RFC 9651 §4.2.3.3: lcalpha or `*`, then lcalpha, DIGIT, `_`, `-`, `.` or `*`.
        private mutating func key() -> Range<Int>? {
            guard let first = self.peek, isLowercase(first) || first == asterisk else { return nil }
            let start = self.index
            self.index += 1
            while self.index < self.bytes.count, isKeyCharacter(self.bytes[self.index]) { self.index += 1 }
            return start..<self.index
        }
    }
}

private let space = UInt8(ascii: " ")
private let tab = UInt8(ascii: "\t")
private let comma = UInt8(ascii: ",")
private let semicolon = UInt8(ascii: ";")
private let equals = UInt8(ascii: "=")
private let quote = UInt8(ascii: "\"")
private let backslash = UInt8(ascii: "\\")
private let asterisk = UInt8(ascii: "*")
private let period = UInt8(ascii: ".")
private let zero = UInt8(ascii: "0")

@inline(__always) private func isDigit(_ c: UInt8) -> Bool { c &- zero < 10 }
@inline(__always) private func isLowercase(_ c: UInt8) -> Bool { c &- UInt8(ascii: "a") < 26 }
@inline(__always) private func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) &- UInt8(ascii: "a") < 26 }

/// tchar (RFC 9110 §5.6.2), `:` and `/`.
private func isTokenCharacter(_ c: UInt8) -> Bool {
    if isAlpha(c) || isDigit(c) { return true }
    switch c {
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
        UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
        UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"),
        UInt8(ascii: ":"), UInt8(ascii: "/"):
        return true
    default:
        return false
    }
}

private func isKeyCharacter(_ c: UInt8) -> Bool {
    isLowercase(c) || isDigit(c) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == period
        || c == asterisk
}
