import NIOCore

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
