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
        var cursor = Cursor(bytes: bytes)
        cursor.skipSpaces()
        var items: [Item] = []
        while !cursor.atEnd {
            guard let item = cursor.item() else { return nil }
            items.append(item)
            cursor.skipOptionalWhitespace()
            if cursor.atEnd { break }
            guard cursor.peek == comma else { return nil }
            cursor.index += 1
            cursor.skipOptionalWhitespace()
            // A trailing comma is not a list.
            guard !cursor.atEnd else { return nil }
        }
        return items
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
        /// the library. The parameters are handed to the library's map in one call: each of its
        /// generic, unspecialised `subscript` setters costs more than parsing the item.
        mutating func item() -> Item? {
            guard let bare = self.bareItem() else { return nil }
            // Three locals, not an array: nothing allocated before the map itself.
            var p0: (key: String, value: RFC9651BareItem)?
            var p1: (key: String, value: RFC9651BareItem)?
            var p2: (key: String, value: RFC9651BareItem)?
            while self.peek == semicolon {
                self.index += 1
                self.skipSpaces()
                guard p2 == nil, let key = self.key() else { return nil }
                var value: RFC9651BareItem = .bool(true)
                if self.peek == equals {
                    self.index += 1
                    guard let v = self.bareItem() else { return nil }
                    value = v
                }
                guard p0?.key != key, p1?.key != key else { return nil }
                if p0 == nil {
                    p0 = (key, value)
                } else if p1 == nil {
                    p1 = (key, value)
                } else {
                    p2 = (key, value)
                }
            }
            let map: OrderedMap<String, RFC9651BareItem>
            switch (p0, p1, p2) {
            case (let a?, nil, _): map = [a.key: a.value]
            case (let a?, let b?, nil): map = [a.key: a.value, b.key: b.value]
            case (let a?, let b?, let c?): map = [a.key: a.value, b.key: b.value, c.key: c.value]
            default: map = OrderedMap()
            }
            return Item(bareItem: bare, parameters: map)
        }

        private mutating func bareItem() -> RFC9651BareItem? {
            guard let first = self.peek else { return nil }
            if isAlpha(first) || first == asterisk { return self.token() }
            if first == quote { return self.string() }
            if isDigit(first) { return self.number() }
            return nil
        }

        /// RFC 9651 §4.2.6: ALPHA or `*`, then tchar, `:` or `/`.
        private mutating func token() -> RFC9651BareItem {
            let start = self.index
            self.index += 1
            while self.index < self.bytes.count, isTokenCharacter(self.bytes[self.index]) { self.index += 1 }
            return .token(self.text(start..<self.index))
        }

        /// RFC 9651 §4.2.5 without escapes: printable ASCII up to the closing quote.
        private mutating func string() -> RFC9651BareItem? {
            let start = self.index + 1
            var i = start
            while i < self.bytes.count {
                let c = self.bytes[i]
                if c == quote {
                    self.index = i + 1
                    return .string(self.text(start..<i))
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
        private mutating func number() -> RFC9651BareItem? {
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
            return .decimal(PseudoDecimal(mantissa: Int(mantissa), exponent: -fractionDigits))
        }

        /// RFC 9651 §4.2.3.3: lcalpha or `*`, then lcalpha, DIGIT, `_`, `-`, `.` or `*`.
        private mutating func key() -> String? {
            guard let first = self.peek, isLowercase(first) || first == asterisk else { return nil }
            let start = self.index
            self.index += 1
            while self.index < self.bytes.count, isKeyCharacter(self.bytes[self.index]) { self.index += 1 }
            return self.text(start..<self.index)
        }

        private func text(_ range: Range<Int>) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: self.bytes[range]), as: UTF8.self)
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
