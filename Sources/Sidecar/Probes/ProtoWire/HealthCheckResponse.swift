import NIOCore

/// `grpc.health.v1.HealthCheckResponse`.
struct HealthCheckResponse: Equatable {
    enum ServingStatus: Int {
        case unknown = 0
        case serving = 1
        case notServing = 2
        case serviceUnknown = 3
    }

    /// The `ServingStatus` number; an `enum` is an `int32` on the wire, and other values than
    /// the four named ones are kept as they came.
    var status: Int = 0

    init(status: Int) { self.status = status }

    init(decoding message: ByteBuffer) throws {
        try ProtoWire.forEachField(in: message) { field, value in
            if field == 1, case .varint(let v) = value { self.status = Int(Int32(truncatingIfNeeded: v)) }
        }
    }

    func encoded() -> ByteBuffer {
        // A negative `int32` is sign-extended to 64 bits: a 10-byte varint.
        var b = ByteBufferAllocator().buffer(capacity: 11)
        ProtoWire.appendVarintField(1, UInt64(bitPattern: Int64(self.status)), to: &b)
        return b
    }
}
