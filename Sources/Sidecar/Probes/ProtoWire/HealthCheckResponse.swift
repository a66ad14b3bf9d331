import NIOCore

/// `grpc.health.v1.HealthCheckResponse`.
struct HealthCheckResponse: Equatable {
    enum ServingStatus: Int {
        case unknown = 0
        case serving = 1
        case notServing = 2
        case serviceUnknown = 3
    }

    /// The `ServingStatus` number, also one not named above. An enum is an `int32` on the wire:
    /// decoding keeps a varint's low 32 bits and encoding sign-extends a negative one, as
    /// protobuf does.
    var status: Int = 0

    init(status: Int) { self.status = status }

    init(decoding message: ByteBuffer) throws {
        try ProtoWire.forEachField(in: message) { field, value in
            if field == 1, case .varint(let v) = value { self.status = Int(Int32(truncatingIfNeeded: v)) }
        }
    }

    func encoded() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: 11)
        ProtoWire.appendVarintField(1, UInt64(bitPattern: Int64(self.status)), to: &b)
        return b
    }
}
