import NIOCore

/// What a queue of received DATA may hold on to, and how it keeps to it.
///
/// A received DATA payload is a zero-copy slice of the read buffer it arrived in, and a slice
/// keeps that whole buffer alive (up to 64 KiB for a client read). Counting only the payload
/// bytes, a peer that sent one byte of DATA per read behind an ignored 16 KiB frame made the
/// sidecar hold ~16 KiB per byte it let through its windows and budgets (a hostile tester: +1.6
/// GiB for 100,000 bytes of DATA, on a stalled and on a healthy upstream alike).
///
/// So a chunk that has to wait behind another one is compacted: copied when it uses less than
/// 1/``maxWaste`` of the storage it is a slice of, and, when small, written into the queue's
/// last chunk instead of becoming a chunk of its own (so that per-chunk bookkeeping stays a
/// fraction of the bytes). The first chunk of a queue stays a slice: a queue that is drained
/// as it fills (the usual case: a window open, a socket that takes the bytes) copies nothing.
/// What a queue holds is then about its first chunk's buffer, plus at most ``maxWaste`` times
/// its other bytes, plus one merge buffer (at most twice ``coalesceLimit``).
public enum DataChunkQueue {
    /// A waiting chunk that uses less than 1/maxWaste of its storage is copied.
    public static let maxWaste = 4
    /// Waiting chunks are merged while the merged chunk stays at or under this many bytes.
    public static let coalesceLimit = 4096
}

extension RangeReplaceableCollection where Self: BidirectionalCollection & MutableCollection, Element == ByteBuffer {
    /// Appends `chunk` (not empty) as ``DataChunkQueue`` says: a slice as it is when the queue
    /// is empty, else compacted.
    mutating func appendWaitingChunk(_ chunk: ByteBuffer) {
        guard let last = self.indices.last else {
            self.append(chunk)
            return
        }
        var chunk = chunk
        let n = chunk.readableBytes
        if n <= DataChunkQueue.coalesceLimit && self[last].readableBytes + n <= DataChunkQueue.coalesceLimit {
            // Taken out to be written: NIO's CircularBuffer subscript has no in-place access,
            // and writing through it copied the last chunk (up to 4 KiB) for every merge. A
            // slice or a chunk shared with another queue is copied once here (copy on write);
            // after that the queue owns it and later merges write into it in place.
            var tail = self.removeLast()
            if tail.writableBytes < n && tail.readerIndex > 0 {
                // Bytes already sent from the front of a chunk the queue kept merging into
                // (the queue never emptied) are dropped, not carried into a larger buffer.
                tail.discardReadBytes()
            }
            tail.writeBuffer(&chunk)
            self.append(tail)
            return
        }
        if n * DataChunkQueue.maxWaste < chunk.storageCapacity {
            var copy = ByteBufferAllocator().buffer(capacity: n)
            copy.writeBuffer(&chunk)
            chunk = copy
        }
        self.append(chunk)
    }
}
