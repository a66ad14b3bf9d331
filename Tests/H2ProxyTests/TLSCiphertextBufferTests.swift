import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

@Suite struct TLSCiphertextBufferTests {
    /// Reads at most `limit` bytes, as OpenSSL does into its record buffer.
    static func read(_ buffer: inout TLSCiphertextBuffer, limit: Int) -> [UInt8] {
        var space = [UInt8](repeating: 0, count: limit)
        let count = space.withUnsafeMutableBytes { buffer.read(into: $0) }
        return Array(space.prefix(count))
    }

    static func write(_ buffer: inout TLSCiphertextBuffer, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer.write($0) }
    }

    @Test func partialReadsDrainOneReceivedBuffer() {
        var b = TLSCiphertextBuffer()
        #expect(Self.read(&b, limit: 5) == [])
        b.receive(ByteBuffer(bytes: Array(1...10)))
        #expect(b.inboundBytes == 10)
        #expect(Self.read(&b, limit: 5) == [1, 2, 3, 4, 5])  // a record header
        #expect(Self.read(&b, limit: 3) == [6, 7, 8])
        #expect(Self.read(&b, limit: 16_384) == [9, 10])
        #expect(b.inboundBytes == 0)
        #expect(Self.read(&b, limit: 5) == [])
    }

    @Test func recordSplitAcrossReceivedBuffersIsReadWhole() {
        var b = TLSCiphertextBuffer()
        b.receive(ByteBuffer(bytes: [1, 2, 3]))
        #expect(Self.read(&b, limit: 2) == [1, 2])
        b.receive(ByteBuffer(bytes: [4, 5]))
        b.receive(ByteBuffer())
        b.receive(ByteBuffer(bytes: [6]))
        #expect(b.inboundBytes == 4)
        #expect(Self.read(&b, limit: 100) == [3, 4, 5, 6])
    }

    @Test func receivedBufferIsNotCopiedOrKeptOnceRead() {
        var b = TLSCiphertextBuffer()
        var received = ByteBuffer(bytes: Array(repeating: 9, count: 100))
        b.receive(received)
        #expect(Self.read(&b, limit: 100).count == 100)
        // Nothing else holds the storage now: writing to it does not copy.
        let before = received.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        received.setInteger(UInt8(1), at: 0)
        #expect(received.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == before)
    }

    @Test func recordsWrittenBetweenTakesGoOutTogether() {
        var b = TLSCiphertextBuffer()
        #expect(b.takeOutbound() == nil)
        Self.write(&b, [1, 2, 3])
        Self.write(&b, [4, 5])
        #expect(b.outboundBytes == 5)
        #expect(b.takeOutbound() == ByteBuffer(bytes: [1, 2, 3, 4, 5]))
        #expect(b.takeOutbound() == nil)
        Self.write(&b, [6])
        #expect(b.takeOutbound() == ByteBuffer(bytes: [6]))
    }

    @Test func outboundStorageIsReusedOnlyOnceReleased() {
        var b = TLSCiphertextBuffer()
        Self.write(&b, [1, 2, 3])
        let first = b.takeOutbound()
        // Still held (a write the socket has not done yet): new records must not overwrite it.
        Self.write(&b, [7, 8, 9])
        #expect(first == ByteBuffer(bytes: [1, 2, 3]))
        let address = { (buffer: ByteBuffer) in buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
        var second: ByteBuffer? = b.takeOutbound()
        #expect(second == ByteBuffer(bytes: [7, 8, 9]))
        let secondAddress = address(second!)
        second = nil
        // Released: the next records go to the front of the same storage, no allocation.
        Self.write(&b, [4])
        let third = b.takeOutbound()!
        #expect(third == ByteBuffer(bytes: [4]))
        #expect(address(third) == secondAddress)
        #expect(b.outboundCapacity <= TLSCiphertextBuffer.maximumPreservedOutboundCapacity)
    }

    @Test func outboundStorageIsReleasedOnlyOnceTaken() {
        var b = TLSCiphertextBuffer()
        Self.write(&b, [1, 2, 3])
        b.releaseOutboundStorage()
        #expect(b.outboundCapacity > 0)
        #expect(b.takeOutbound() == ByteBuffer(bytes: [1, 2, 3]))
        b.releaseOutboundStorage()
        #expect(b.outboundCapacity == 0)
        Self.write(&b, [4])
        #expect(b.takeOutbound() == ByteBuffer(bytes: [4]))
    }

    @Test func largeOutboundStorageIsNotKept() {
        var b = TLSCiphertextBuffer()
        Self.write(&b, Array(repeating: 1, count: 100_000))
        #expect(b.takeOutbound()?.readableBytes == 100_000)
        Self.write(&b, [2])
        #expect(b.outboundCapacity <= TLSCiphertextBuffer.maximumPreservedOutboundCapacity)
        #expect(b.takeOutbound() == ByteBuffer(bytes: [2]))
    }
}

/// `TLSHandler` over the ByteBuffer BIO, with ciphertext cut and glued the ways a socket does.
@Suite struct TLSRecordBoundaryTests {
    /// Moves bytes both ways until neither side writes, cutting every buffer into `chunk`-byte
    /// pieces (records split across reads) or, with `chunk` nil, gluing everything one side sent
    /// into one buffer (several records in one read).
    static func pump(_ pair: TLSPair, chunk: Int?) throws {
        var moved = true
        while moved {
            moved = false
            for (from, to) in [(pair.client, pair.server), (pair.server, pair.client)] {
                var glued = ByteBuffer()
                while var b = try from.readOutbound(as: ByteBuffer.self) {
                    moved = true
                    guard let chunk else {
                        glued.writeBuffer(&b)
                        continue
                    }
                    while b.readableBytes > 0, to.isActive {
                        try to.writeInbound(b.readSlice(length: min(chunk, b.readableBytes))!)
                    }
                }
                if glued.readableBytes > 0, to.isActive { try to.writeInbound(glued) }
            }
        }
    }

    static func pair() throws -> TLSPair {
        try TLSPair(clientContext: TLSHandlerTests.clientContext(), serverContext: TLSHandlerTests.serverContext())
    }

    @Test(arguments: [1, 7, 4096, nil] as [Int?])
    func dataSurvivesAnyCut(chunk: Int?) throws {
        let pair = try Self.pair()
        try Self.pump(pair, chunk: chunk)
        #expect(pair.registry.render().contains("insight_tls_handshakes_total{side=\"downstream\"} 1"))
        // Several flushes, so several records (one per flush), then one larger than a record.
        for i in 0..<5 { try pair.client.writeOutbound(ByteBuffer(repeating: UInt8(i), count: 300)) }
        try pair.server.writeOutbound(ByteBuffer(repeating: 9, count: 40_000))
        try Self.pump(pair, chunk: chunk)
        #expect(try pair.readAll(pair.server) == (0..<5).flatMap { Array(repeating: UInt8($0), count: 300) })
        #expect(try pair.readAll(pair.client) == Array(repeating: 9, count: 40_000))
    }

    /// The TLS records in `buffer`: (content type, length) from each 5-byte record header.
    static func records(_ buffer: ByteBuffer) -> [(type: UInt8, length: Int)] {
        var b = buffer
        var out: [(type: UInt8, length: Int)] = []
        while let type = b.readInteger(as: UInt8.self), b.readInteger(as: UInt16.self) != nil,
            let length = b.readInteger(as: UInt16.self)
        {
            out.append((type, Int(length)))
            b.moveReaderIndex(forwardBy: min(Int(length), b.readableBytes))
        }
        return out
    }

    /// A flush of many small writes (an HTTP/2 session's frame headers and payload slices) is one
    /// TLS record, and a flush larger than a record is as many records as 16 KiB needs.
    @Test func aFlushIsOneRecordPer16KiB() throws {
        let pair = try Self.pair()
        try Self.pump(pair, chunk: nil)
        for i in 0..<20 {
            pair.server.write(ByteBuffer(repeating: UInt8(i), count: i % 2 == 0 ? 9 : 100), promise: nil)
        }
        pair.server.flush()
        var flight = ByteBuffer()
        while var b = try pair.server.readOutbound(as: ByteBuffer.self) { flight.writeBuffer(&b) }
        let small = Self.records(flight)
        #expect(small.count == 1)
        #expect(small.first?.type == 23)  // application_data
        try pair.client.writeInbound(flight)
        for _ in 0..<10 { pair.server.write(ByteBuffer(repeating: 1, count: 4_000), promise: nil) }
        pair.server.flush()
        flight.clear()
        while var b = try pair.server.readOutbound(as: ByteBuffer.self) { flight.writeBuffer(&b) }
        #expect(Self.records(flight).count == 3)  // 40,000 bytes
        try pair.client.writeInbound(flight)
        let expected = (0..<20).flatMap { Array(repeating: UInt8($0), count: $0 % 2 == 0 ? 9 : 100) }
        #expect(try pair.readAll(pair.client) == expected + Array(repeating: 1, count: 40_000))
    }

    @Test func closeNotifyClosesThePeer() throws {
        let pair = try Self.pair()
        try Self.pump(pair, chunk: 3)
        // The server speaks first, as an HTTP/2 server does (SETTINGS).
        try pair.server.writeOutbound(ByteBuffer(string: "settings"))
        try Self.pump(pair, chunk: 3)
        #expect(try pair.readAll(pair.client) == Array("settings".utf8))
        try pair.client.writeOutbound(ByteBuffer(string: "last"))
        // The pending write is encrypted before close_notify, both in one flight.
        pair.client.close(promise: nil)
        try Self.pump(pair, chunk: 3)
        #expect(try pair.readAll(pair.server) == Array("last".utf8))
        #expect(!pair.server.isActive)
        let failures = pair.registry.render().split(separator: "\n").filter {
            $0.hasPrefix("insight_tls_handshake_errors_total{") && !$0.hasSuffix(" 0")
        }
        #expect(failures.isEmpty)
    }
}
