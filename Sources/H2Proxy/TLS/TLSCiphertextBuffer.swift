import NIOCore

/// The ciphertext of one TLS connection as OpenSSL's BIO sees it: bytes the peer sent that
/// OpenSSL has not read yet, and records OpenSSL wrote that are not handed to the socket yet.
///
/// OpenSSL reads straight out of the `ByteBuffer` the channel received and writes straight into
/// the `ByteBuffer` the channel will send: one copy each way, where a pair of memory BIOs took two
/// (socket buffer → BIO → OpenSSL, and OpenSSL → BIO → new socket buffer). No OpenSSL here, so it
/// is tested on its own; ``TLSConnection`` wires it to OpenSSL.
struct TLSCiphertextBuffer {
    /// Received and not yet read by OpenSSL; nil once drained, so that the channel's receive
    /// buffer is not kept alive (NIO reuses it when nothing else holds it).
    private var inbound: ByteBuffer?
    /// Records written since the last ``takeOutbound()``. The bytes before its reader index were
    /// handed to the channel; once the channel let go of them, the storage is reused.
    private var outbound: ByteBuffer

    /// Outbound storage up to this many bytes is kept for the next records; a larger one (after
    /// a bulk write) is dropped so that an idle connection does not hold it.
    static let maximumPreservedOutboundCapacity = 16_384

    init() {
        self.outbound = ByteBuffer()
    }

    /// Bytes received and not yet read by OpenSSL.
    var inboundBytes: Int { self.inbound?.readableBytes ?? 0 }

    /// Bytes written by OpenSSL and not yet taken.
    var outboundBytes: Int { self.outbound.readableBytes }

    /// Bytes of outbound storage held (what an idle connection keeps).
    var outboundCapacity: Int { self.outbound.capacity }

    /// Queues ciphertext received from the peer, without copying it unless a partial record is
    /// still waiting (then the new bytes go after it).
    mutating func receive(_ buffer: ByteBuffer) {
        guard buffer.readableBytes > 0 else { return }
        if self.inbound == nil {
            self.inbound = buffer
        } else {
            var buffer = buffer
            self.inbound!.writeBuffer(&buffer)
        }
    }

    /// Copies up to `space.count` received bytes into `space` (OpenSSL's record buffer).
    /// - Returns: the number of bytes copied; 0 when nothing is buffered (OpenSSL retries later).
    mutating func read(into space: UnsafeMutableRawBufferPointer) -> Int {
        guard self.inbound != nil else { return 0 }
        let count = self.inbound!.readWithUnsafeReadableBytes { bytes in
            let count = min(bytes.count, space.count)
            if count > 0 { space.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: count) }
            return count
        }
        if self.inbound!.readableBytes == 0 { self.inbound = nil }
        return count
    }

    /// Appends records OpenSSL produced; never refuses bytes (the handler bounds what it
    /// encrypts at once).
    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if self.outbound.readableBytes == 0 && self.outbound.readerIndex > 0 {
            // Everything written so far was taken: start over at the front of the storage, which
            // is reused as is unless the channel still holds it (then `clear` copies on write).
            if self.outbound.capacity > Self.maximumPreservedOutboundCapacity {
                self.outbound = ByteBuffer()
            } else {
                self.outbound.clear()
            }
        }
        self.outbound.writeBytes(bytes)
    }

    /// Lets go of the outbound storage when every record in it was taken (an idle connection).
    mutating func releaseOutboundStorage() {
        if self.outbound.readableBytes == 0 { self.outbound = ByteBuffer() }
    }

    /// The records written since the last call, to send as one buffer; nil if there are none.
    mutating func takeOutbound() -> ByteBuffer? {
        guard self.outbound.readableBytes > 0 else { return nil }
        let records = self.outbound
        self.outbound.moveReaderIndex(to: self.outbound.writerIndex)
        return records
    }
}
