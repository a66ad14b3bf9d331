import NIOCore

/// The protobuf wire format, for the four small messages probes use (Proto/).
///
/// A hand encoder instead of swift-protobuf: the four messages have thirteen scalar fields
/// between them, and this avoids a dependency whose plugin and runtime would add minutes to every
/// clean build. The decoder checks every length against the bytes left, caps varints at 10
/// bytes, skips unknown fields and rejects groups; it is fuzzed in the unit tests and checked
/// against Python's protobuf in the end-to-end tests.
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

    static func appendStringField(_ field: Int, _ string: String, to buffer: inout ByteBuffer) {
        self.appendBytesField(field, Array(string.utf8), to: &buffer)
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

/// `grpc.health.v1.HealthCheckRequest`.
struct HealthCheckRequest: Equatable {
    var service = ""

    func encoded() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: self.service.utf8.count + 4)
        ProtoWire.appendStringField(1, self.service, to: &b)
        return b
    }
}

/// `grpc.health.v1.HealthCheckResponse`.
struct HealthCheckResponse: Equatable {
    enum ServingStatus: Int {
        case unknown = 0
        case serving = 1
        case notServing = 2
        case serviceUnknown = 3
    }

    var status: Int = 0

    init(status: Int) { self.status = status }

    init(decoding message: ByteBuffer) throws {
        try ProtoWire.forEachField(in: message) { field, value in
            if field == 1, case .varint(let v) = value { self.status = Int(truncatingIfNeeded: v) }
        }
    }

    func encoded() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: 4)
        ProtoWire.appendVarintField(1, UInt64(self.status), to: &b)
        return b
    }
}

/// `insight.probe.v1.EchoRequest`.
struct EchoRequest: Equatable {
    var id = ""
    var payload: [UInt8] = []
    var sentUnixMicros: Int64 = 0
    var sourceHop = ""
    var sourceRegion = ""
    var target = ""

    init(id: String, payload: [UInt8], sentUnixMicros: Int64, sourceHop: String, sourceRegion: String, target: String) {
        self.id = id
        self.payload = payload
        self.sentUnixMicros = sentUnixMicros
        self.sourceHop = sourceHop
        self.sourceRegion = sourceRegion
        self.target = target
    }

    init(decoding message: ByteBuffer) throws {
        try ProtoWire.forEachField(in: message) { field, value in
            switch (field, value) {
            case (1, .bytes(let b)): self.id = String(buffer: b)
            case (2, .bytes(let b)): self.payload = Array(b.readableBytesView)
            case (3, .varint(let v)): self.sentUnixMicros = Int64(bitPattern: v)
            case (4, .bytes(let b)): self.sourceHop = String(buffer: b)
            case (5, .bytes(let b)): self.sourceRegion = String(buffer: b)
            case (6, .bytes(let b)): self.target = String(buffer: b)
            default: break
            }
        }
    }

    func encoded() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: 64 + self.payload.count)
        ProtoWire.appendStringField(1, self.id, to: &b)
        ProtoWire.appendBytesField(2, self.payload, to: &b)
        ProtoWire.appendVarintField(3, UInt64(bitPattern: self.sentUnixMicros), to: &b)
        ProtoWire.appendStringField(4, self.sourceHop, to: &b)
        ProtoWire.appendStringField(5, self.sourceRegion, to: &b)
        ProtoWire.appendStringField(6, self.target, to: &b)
        return b
    }
}

/// `insight.probe.v1.EchoResponse`.
struct EchoResponse: Equatable {
    var id = ""
    var payload: [UInt8] = []
    var hop = ""
    var region = ""
    var receivedUnixMicros: Int64 = 0

    init(id: String, payload: [UInt8], hop: String, region: String, receivedUnixMicros: Int64) {
        self.id = id
        self.payload = payload
        self.hop = hop
        self.region = region
        self.receivedUnixMicros = receivedUnixMicros
    }

    init(decoding message: ByteBuffer) throws {
        try ProtoWire.forEachField(in: message) { field, value in
            switch (field, value) {
            case (1, .bytes(let b)): self.id = String(buffer: b)
            case (2, .bytes(let b)): self.payload = Array(b.readableBytesView)
            case (3, .bytes(let b)): self.hop = String(buffer: b)
            case (4, .bytes(let b)): self.region = String(buffer: b)
            case (5, .varint(let v)): self.receivedUnixMicros = Int64(bitPattern: v)
            default: break
            }
        }
    }

    func encoded() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: 64 + self.payload.count)
        ProtoWire.appendStringField(1, self.id, to: &b)
        ProtoWire.appendBytesField(2, self.payload, to: &b)
        ProtoWire.appendStringField(3, self.hop, to: &b)
        ProtoWire.appendStringField(4, self.region, to: &b)
        ProtoWire.appendVarintField(5, UInt64(bitPattern: self.receivedUnixMicros), to: &b)
        return b
    }
}

/// gRPC's length-prefixed message framing.
enum GRPCMessage {
    static func frame(_ message: ByteBuffer) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: message.readableBytes + 5)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(message.readableBytes))
        var m = message
        out.writeBuffer(&m)
        return out
    }

    /// The first message of a response body (uncompressed only).
    static func first(in body: ByteBuffer) throws -> ByteBuffer {
        var b = body
        guard let flag = b.readInteger(as: UInt8.self), let length = b.readInteger(as: UInt32.self) else {
            throw ProtoWire.DecodeError(reason: "no gRPC message in the response")
        }
        guard flag == 0 else { throw ProtoWire.DecodeError(reason: "compressed gRPC message") }
        guard let m = b.readSlice(length: Int(length)) else {
            throw ProtoWire.DecodeError(reason: "truncated gRPC message")
        }
        return m
    }
}
