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
        self.write(to: &b)
        return b
    }

    /// Every field but the send time, encoded once: a probe target's echo requests differ only
    /// in ``sentUnixMicros`` (field 3), so ``Framed/framed(sentUnixMicros:)`` writes the frame
    /// prefix, the bytes before field 3, field 3 and the bytes after it, into one buffer: the
    /// bytes of `GRPCMessageFraming.frame(encoded())` for the whole request.
    struct Framed {
        /// Fields 1 and 2 (`id`, `payload`).
        let head: ByteBuffer
        /// Fields 4 to 6 (`source_hop`, `source_region`, `target`).
        let tail: ByteBuffer

        /// The gRPC-framed request sent at `sentUnixMicros` (microseconds since the Unix epoch).
        func framed(sentUnixMicros: Int64) -> ByteBuffer {
            // Frame prefix, the tag and at most 10 bytes of the varint.
            var b = ByteBufferAllocator().buffer(
                capacity: 5 + 1 + 10 + self.head.readableBytes + self.tail.readableBytes)
            b.writeInteger(UInt8(0))
            b.writeInteger(UInt32(0))
            b.writeImmutableBuffer(self.head)
            ProtoWire.appendVarintField(3, UInt64(bitPattern: sentUnixMicros), to: &b)
            b.writeImmutableBuffer(self.tail)
            b.setInteger(UInt32(b.readableBytes - 5), at: b.readerIndex + 1)
            return b
        }
    }

    /// This request without its send time, for ``Framed/framed(sentUnixMicros:)``.
    var withoutSendTime: Framed {
        var head = ByteBufferAllocator().buffer(capacity: 2 * 10 + self.id.utf8.count + self.payload.count)
        ProtoWire.appendStringField(1, self.id, to: &head)
        ProtoWire.appendBytesField(2, self.payload, to: &head)
        var tail = ByteBufferAllocator().buffer(
            capacity: 3 * 10 + self.sourceHop.utf8.count + self.sourceRegion.utf8.count + self.target.utf8.count)
        ProtoWire.appendStringField(4, self.sourceHop, to: &tail)
        ProtoWire.appendStringField(5, self.sourceRegion, to: &tail)
        ProtoWire.appendStringField(6, self.target, to: &tail)
        return Framed(head: head, tail: tail)
    }

    private func write(to b: inout ByteBuffer) {
        ProtoWire.appendStringField(1, self.id, to: &b)
        ProtoWire.appendBytesField(2, self.payload, to: &b)
        ProtoWire.appendVarintField(3, UInt64(bitPattern: self.sentUnixMicros), to: &b)
        ProtoWire.appendStringField(4, self.sourceHop, to: &b)
        ProtoWire.appendStringField(5, self.sourceRegion, to: &b)
        ProtoWire.appendStringField(6, self.target, to: &b)
    }
}
