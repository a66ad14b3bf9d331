import NIOCore

/// `grpc.health.v1.HealthCheckRequest`.
struct HealthCheckRequest: Equatable {
    var service = ""

    func encoded() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: self.service.utf8.count + 4)
        ProtoWire.appendStringField(1, self.service, to: &b)
        return b
    }
}
