import NIOCore

/// The plaintext written to a TLS connection since the last flush, gathered into one buffer so
/// that a flush is encrypted by one `SSL_write`: as few records as the bytes need (one per
/// 16 KiB), not one per HTTP/2 frame or payload slice.
///
/// A flush usually carries many small buffers (per response: a slice of the session's frame
/// headers and a slice of the body). The first is kept as it is; from the second on, they are
/// copied into staging storage that is kept from flush to flush, so that gathering allocates
/// nothing once warm (appending to the first buffer instead copied the session's storage, then
/// grew it, every flush). No OpenSSL here, so it is tested on its own.
struct TLSPlaintextBuffer {
    /// The only buffer written since the last flush, not copied.
    private var single: ByteBuffer?
    /// Two or more buffers, copied together; reused when the flush is done.
    private var staging: ByteBuffer
    private var isStaging = false

    /// Staging storage up to this many bytes is kept for the next flush; a larger one (after a
    /// bulk write) is dropped so that an idle connection does not hold it.
    static let maximumPreservedCapacity = 16_384

    init() {
        self.staging = ByteBuffer()
    }

    var isEmpty: Bool { self.single == nil && !self.isStaging }

    /// Bytes written since the last flush.
    var readableBytes: Int { self.isStaging ? self.staging.readableBytes : (self.single?.readableBytes ?? 0) }

    /// Bytes of staging storage held (what an idle connection keeps).
    var stagingCapacity: Int { self.staging.capacity }

    mutating func append(_ buffer: ByteBuffer) {
        if self.isStaging {
            self.staging.writeImmutableBuffer(buffer)
        } else if let first = self.single {
            self.single = nil
            self.isStaging = true
            self.staging.writeImmutableBuffer(first)
            self.staging.writeImmutableBuffer(buffer)
        } else {
            self.single = buffer
        }
    }

    /// Calls `body` with everything written since the last flush (nothing when empty), then
    /// forgets it, keeping the staging storage for the next flush.
    mutating func drain<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result? {
        defer { self.reset() }
        if self.isStaging {
            return self.staging.withUnsafeReadableBytes(body)
        }
        return self.single?.withUnsafeReadableBytes(body)
    }

    /// Forgets what was written (the connection failed or closed).
    mutating func reset() {
        self.single = nil
        guard self.isStaging else { return }
        self.isStaging = false
        if self.staging.capacity > Self.maximumPreservedCapacity {
            self.staging = ByteBuffer()
        } else {
            self.staging.clear()
        }
    }
}
