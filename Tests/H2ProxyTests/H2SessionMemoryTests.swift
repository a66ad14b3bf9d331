import Testing

@testable import H2Proxy

#if canImport(Glibc)
    import Glibc
#endif

/// The allocator nghttp2 sessions use: zeroed blocks of whole pages cost no RSS until written.
@Suite struct H2SessionMemoryTests {
    #if os(Linux)
        /// Whether every page of `bytes` at `block` is in memory (`mincore`).
        private func resident(_ block: UnsafeMutableRawPointer, _ bytes: Int) -> Bool {
            var pages = [UInt8](repeating: 0, count: (bytes + H2Session.pageSize - 1) / H2Session.pageSize)
            precondition(mincore(block, bytes, &pages) == 0)
            return pages.contains { $0 & 1 != 0 }
        }

        /// A block that reuses memory someone wrote to and freed (what glibc hands out for the
        /// stream map of the next connection) comes back zeroed without making its page resident.
        @Test(arguments: [(256, 16), (1, 8192)])
        func wholePagesAreZeroedWithoutTouchingThem(count: Int, size: Int) throws {
            let bytes = count * size
            for _ in 0..<8 {
                let block = try #require(untouchedCalloc(count, size))
                #expect(Int(bitPattern: block) % H2Session.pageSize == 0)
                #expect(!self.resident(block, bytes))
                let raw = UnsafeRawBufferPointer(start: block, count: bytes)
                #expect(raw.allSatisfy { $0 == 0 })
                memset(block, 0xAB, bytes)
                free(block)
            }
        }
    #endif

    @Test func otherSizesAreZeroedAsByCalloc() throws {
        for _ in 0..<8 {
            let block = try #require(untouchedCalloc(3, 100))
            #expect(UnsafeRawBufferPointer(start: block, count: 300).allSatisfy { $0 == 0 })
            memset(block, 0xAB, 300)
            free(block)
        }
        #expect(untouchedCalloc(Int.max, 2) == nil)
    }
}
