import NIOCore
import Testing

@testable import H2Proxy

/// What a queue of waiting DATA holds: its first chunk as received, the rest compacted.
@Suite struct DataChunkQueueTests {
    /// `n` bytes as a slice of a `capacity`-byte read buffer, as H2Session hands out DATA.
    static func slice(_ n: Int, of capacity: Int, byte: UInt8 = 7) -> ByteBuffer {
        var read = ByteBufferAllocator().buffer(capacity: capacity)
        read.writeRepeatingByte(0xAA, count: capacity - n)
        read.writeRepeatingByte(byte, count: n)
        return read.getSlice(at: capacity - n, length: n)!
    }

    /// Storage the queue keeps alive, bytes (every chunk's whole storage).
    static func held(_ chunks: some Collection<ByteBuffer>) -> Int { chunks.reduce(0) { $0 + $1.storageCapacity } }

    @Test func theFirstChunkStaysASlice() {
        var q = CircularBuffer<ByteBuffer>()
        q.appendWaitingChunk(Self.slice(1, of: 16384))
        #expect(q.count == 1 && q.first?.storageCapacity == 16384)
    }

    /// The hostile tester's pattern: one byte of DATA per 16 KiB read.
    @Test func oneByteSlicesOfLargeReadsDoNotPinTheirReads() {
        var q = CircularBuffer<ByteBuffer>()
        var a: [ByteBuffer] = []
        for i in 0..<10_000 {
            q.appendWaitingChunk(Self.slice(1, of: 16384, byte: UInt8(i & 0xFF)))
            a.appendWaitingChunk(Self.slice(1, of: 16384, byte: UInt8(i & 0xFF)))
        }
        for chunks in [Array(q), a] {
            #expect(chunks.reduce(0) { $0 + $1.readableBytes } == 10_000)
            // The first read buffer, then merged chunks of up to 4 KiB (storage doubles as it grows).
            #expect(chunks.count <= 1 + 10_000 / 4096 + 2, "\(chunks.count) chunks")
            #expect(Self.held(chunks) <= 16384 + 4 * 10_000, "holds \(Self.held(chunks)) bytes for 10,000")
            var all = ByteBuffer()
            for var c in chunks { all.writeBuffer(&c) }
            #expect(all.readableBytesView.elementsEqual((0..<10_000).map { UInt8($0 & 0xFF) }))
        }
    }

    /// A queue that never empties while its front is sent and its back merged into: what was
    /// sent is dropped, so the merged chunk's storage stays bounded however many bytes pass.
    @Test func aQueueThatNeverEmptiesStaysBounded() {
        var q = CircularBuffer<ByteBuffer>()
        var sent: [UInt8] = []
        var queued: [UInt8] = []
        var next: UInt8 = 0
        for _ in 0..<20_000 {
            for _ in 0..<3 {
                var chunk = Self.slice(7, of: 16384)
                chunk.setBytes((0..<7).map { i in next &+ UInt8(i) }, at: chunk.readerIndex)
                queued += (0..<7).map { i in next &+ UInt8(i) }
                next &+= 7
                q.appendWaitingChunk(chunk)
            }
            // Send as much as came in, less the first round's 10 (so the queue never empties
            // and stays one chunk), from the front as H2Session.sendData does (slice, put the
            // rest back).
            var remaining = sent.isEmpty ? 11 : 21
            while remaining > 0, var head = q.popFirst() {
                let piece = head.readSlice(length: min(remaining, head.readableBytes))!
                sent += piece.readableBytesView
                remaining -= piece.readableBytes
                if head.readableBytes > 0 { q.prepend(head) }
            }
        }
        #expect(q.count == 1)
        #expect(q.allSatisfy { $0.storageCapacity <= 4 * DataChunkQueue.coalesceLimit }, "\(q.map(\.storageCapacity))")
        var rest: [UInt8] = []
        for c in q { rest += c.readableBytesView }
        #expect(sent + rest == queued)
    }

    @Test func aLargeChunkThatWastesItsStorageIsCopied() {
        var q = CircularBuffer<ByteBuffer>()
        q.appendWaitingChunk(Self.slice(10_000, of: 65536))
        q.appendWaitingChunk(Self.slice(10_000, of: 65536))
        #expect(q.count == 2)
        #expect(q.first?.storageCapacity == 65536)
        #expect(q.last!.storageCapacity <= 2 * 10_000)
    }

    @Test func aLargeChunkThatFillsItsStorageStaysASlice() {
        var q = CircularBuffer<ByteBuffer>()
        q.appendWaitingChunk(Self.slice(16384, of: 65536))
        q.appendWaitingChunk(Self.slice(16384, of: 65536))
        #expect(q.count == 2 && q.last?.storageCapacity == 65536)
    }

    /// Seeded random chunk sizes and storage: every byte kept, in order, and what is held
    /// stays within the bound the type documents.
    @Test(arguments: SeededRandom.seeds(count: 8))
    func randomChunksKeepEveryByteInOrderWithinTheBound(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        var q = CircularBuffer<ByteBuffer>()
        var expected: [UInt8] = []
        for i in 0..<500 {
            let n = Int.random(in: 1...20_000, using: &random)
            let capacity = n + Int.random(in: 0...65536, using: &random)
            let chunk = Self.slice(n, of: capacity, byte: UInt8(i & 0xFF))
            q.appendWaitingChunk(chunk)
            expected += repeatElement(UInt8(i & 0xFF), count: n)
            // Sometimes the queue drains a little, as a window opens.
            if Bool.random(using: &random), var head = q.popFirst() {
                let k = Int.random(in: 0...head.readableBytes, using: &random)
                head.moveReaderIndex(forwardBy: k)
                expected.removeFirst(k)
                if head.readableBytes > 0 { q.prepend(head) }
            }
        }
        var all = ByteBuffer()
        for var c in q { all.writeBuffer(&c) }
        #expect(all.readableBytesView.elementsEqual(expected), "seed \(seed)")
        let bytes = q.reduce(0) { $0 + $1.readableBytes }
        // The head may be any earlier chunk's storage after draining: bound with the largest read.
        #expect(Self.held(q.dropFirst()) <= 2 * DataChunkQueue.maxWaste * bytes + 2 * 65536, "seed \(seed)")
    }

    /// Through a session: a client stream whose peer window is shut holds its DATA in the
    /// outbound queue, and 1-byte pieces of 16 KiB reads do not keep those reads alive.
    @Test func aStalledStreamHoldsAboutWhatItQueued() throws {
        var settings = H2Session.Settings()
        settings.initialWindowSize = 0
        let link = BackToBack(serverSettings: settings)
        let id = try link.client.submitRequest(BackToBack.request(), endStream: false)
        try link.pump()
        for i in 0..<5_000 { link.client.sendData(streamID: id, Self.slice(1, of: 16384, byte: UInt8(i & 0xFF))) }
        try link.pump()
        let chunks = Array(try #require(link.client.outbound[id]).chunks)
        #expect(chunks.reduce(0) { $0 + $1.readableBytes } == 5_000)
        #expect(Self.held(chunks) <= 16384 + 4 * 5_000, "holds \(Self.held(chunks)) bytes for 5,000")
    }
}
