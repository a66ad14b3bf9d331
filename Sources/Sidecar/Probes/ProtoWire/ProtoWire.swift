import NIOCore

/// The protobuf wire format, for the four small messages probes use (Proto/).
///
/// A hand encoder instead of swift-protobuf: the four messages have thirteen scalar fields
/// between them, and this avoids a dependency whose plugin and runtime would add minutes to every
/// clean build. The decoder checks every length against the bytes left, caps varints at 10
/// bytes, skips unknown fields and rejects groups; it is fuzzed and checked against golden bytes
/// from Python's protobuf in the unit tests (`ProtoWireTests`), and against Python's protobuf in
/// the end-to-end tests. Each message is a type of its own in this folder.
enum ProtoWire {
    struct DecodeError: Error, Equatable {
        var reason: String
    }

    enum Value {
        case varint(UInt64)
        case bytes(ByteBuffer)
    }

    static func appendVarint(_ value: UInt64, to buffer: inout ByteBuffer) {
        var v = value
        while v >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        buffer.writeInteger(UInt8(v))
    }

    static func appendVarintField(_ field: Int, _ value: UInt64, to buffer: inout ByteBuffer) {
        guard value != 0 else { return }
        self.appendVarint(UInt64(field << 3), to: &buffer)
        self.appendVarint(value, to: &buffer)
    }

    static func appendBytesField(_ field: Int, _ bytes: some Collection<UInt8>, to buffer: inout ByteBuffer) {
        guard !bytes.isEmpty else { return }
        self.appendVarint(UInt64(field << 3 | 2), to: &buffer)
        self.appendVarint(UInt64(bytes.count), to: &buffer)
        buffer.writeBytes(bytes)
    }

    /// The string's UTF-8 bytes are written straight from the string (no array of them made).
    static func appendStringField(_ field: Int, _ string: String, to buffer: inout ByteBuffer) {
        let count = string.utf8.count
        guard count > 0 else { return }
        self.appendVarint(UInt64(field << 3 | 2), to: &buffer)
        self.appendVarint(UInt64(count), to: &buffer)
        buffer.writeString(string)
    }

    /// Calls `body` for each field of a message, in order.
    static func forEachField(in message: ByteBuffer, _ body: (Int, Value) throws -> Void) throws {
        var buffer = message
        while buffer.readableBytes > 0 {
            let key = try self.readVarint(&buffer)
            let field = Int(key >> 3)
            guard field > 0 && field < (1 << 29) else { throw DecodeError(reason: "invalid field number") }
            switch key & 7 {
            case 0:
                try body(field, .varint(try self.readVarint(&buffer)))
            case 1:
                guard buffer.readableBytes >= 8 else { throw DecodeError(reason: "truncated fixed64") }
                buffer.moveReaderIndex(forwardBy: 8)
            case 2:
                let length = try self.readVarint(&buffer)
                guard length <= UInt64(buffer.readableBytes), let slice = buffer.readSlice(length: Int(length)) else {
                    throw DecodeError(reason: "length past the end of the message")
                }
                try body(field, .bytes(slice))
            case 5:
                guard buffer.readableBytes >= 4 else { throw DecodeError(reason: "truncated fixed32") }
                buffer.moveReaderIndex(forwardBy: 4)
            default:
                throw DecodeError(reason: "unsupported wire type \(key & 7)")
            }
        }
    }

    static func readVarint(_ buffer: inout ByteBuffer) throws -> UInt64 {
        var result: UInt64 = 0
        for i in 0..<10 {
            guard let byte = buffer.readInteger(as: UInt8.self) else { throw DecodeError(reason: "truncated varint") }
            result |= UInt64(byte & 0x7f) << (7 * UInt64(i))
            if byte & 0x80 == 0 { return result }
        }
        throw DecodeError(reason: "varint longer than 10 bytes")
    }
}
