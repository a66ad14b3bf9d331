import NIOCore

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
