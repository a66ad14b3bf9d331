import NIOCore
import Testing

@testable import H2Proxy

@Suite struct TLSPlaintextBufferTests {
    static func drain(_ buffer: inout TLSPlaintextBuffer) -> [UInt8] {
        buffer.drain { Array($0) } ?? []
    }

    static func address(_ buffer: ByteBuffer) -> UInt {
        buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func writesSinceTheLastFlushComeOutTogetherInOrder() {
        var b = TLSPlaintextBuffer()
        #expect(b.isEmpty)
        #expect(b.drain { _ in Issue.record("drained nothing") } == nil)
        b.append(ByteBuffer(bytes: [1, 2]))
        #expect(b.readableBytes == 2)
        b.append(ByteBuffer(bytes: [3]))
        b.append(ByteBuffer(bytes: [4, 5, 6]))
        #expect(b.readableBytes == 6)
        #expect(Self.drain(&b) == [1, 2, 3, 4, 5, 6])
        #expect(b.isEmpty)
        b.append(ByteBuffer(bytes: [7]))
        #expect(Self.drain(&b) == [7])
        #expect(b.isEmpty)
    }

    @Test func aSingleWriteIsEncryptedWhereItIs() {
        var b = TLSPlaintextBuffer()
        let frame = ByteBuffer(bytes: Array(repeating: 3, count: 200))
        b.append(frame)
        let drained = b.drain { UInt(bitPattern: $0.baseAddress) }
        #expect(drained == Self.address(frame))
    }

    /// Gathering a flush allocates nothing once warm: the staging storage of one flush is the
    /// storage of the next, and the buffers written (a session's frames) are not copied on write.
    @Test func stagingStorageIsReusedFromFlushToFlush() {
        var b = TLSPlaintextBuffer()
        var session = ByteBuffer(bytes: Array(repeating: 1, count: 64))
        let sessionAddress = Self.address(session)
        b.append(session.getSlice(at: 0, length: 30)!)
        b.append(ByteBuffer(bytes: [2, 2]))
        let first = b.drain { UInt(bitPattern: $0.baseAddress) }
        #expect(first != nil && first != sessionAddress)
        // The session's storage is its own again: reusing it does not copy.
        session.setInteger(UInt8(9), at: 0)
        #expect(Self.address(session) == sessionAddress)
        for _ in 0..<3 {
            b.append(ByteBuffer(bytes: [1, 2, 3]))
            b.append(ByteBuffer(bytes: [4]))
            #expect(b.drain { UInt(bitPattern: $0.baseAddress) } == first)
        }
    }

    @Test func largeStagingStorageIsNotKept() {
        var b = TLSPlaintextBuffer()
        b.append(ByteBuffer(repeating: 1, count: 40_000))
        b.append(ByteBuffer(repeating: 2, count: 40_000))
        #expect(b.drain { $0.count } == 80_000)
        #expect(b.stagingCapacity <= TLSPlaintextBuffer.maximumPreservedCapacity)
        b.append(ByteBuffer(bytes: [1]))
        b.append(ByteBuffer(bytes: [2]))
        #expect(Self.drain(&b) == [1, 2])
    }

    @Test func resetForgetsWhatWasWritten() {
        var b = TLSPlaintextBuffer()
        b.append(ByteBuffer(bytes: [1]))
        b.append(ByteBuffer(bytes: [2]))
        b.reset()
        #expect(b.isEmpty)
        #expect(b.readableBytes == 0)
        b.append(ByteBuffer(bytes: [3]))
        #expect(Self.drain(&b) == [3])
    }
}
