import Testing

@testable import H2Proxy

#if canImport(Glibc)
    import Glibc
#endif

/// The allocator nghttp2 sessions use: free lists by size class, bounded, and zeroed whole
/// pages that stay untouched.
@Suite struct H2MemoryPoolTests {
    @Test func aFreedBlockIsHandedOutAgainForTheSameSizeClass() throws {
        let pool = H2MemoryPool(limit: 4096)
        let a = try #require(H2MemoryPool.allocate(pool.state, 100))
        H2MemoryPool.deallocate(pool.state, a)
        #expect(pool.cachedBytes == 128)
        // 97...128 bytes share a class.
        let b = try #require(H2MemoryPool.allocate(pool.state, 120))
        #expect(b == a)
        #expect(pool.reused == 1 && pool.allocated == 1 && pool.cachedBytes == 0)
        // Another class gets a block of its own.
        let c = try #require(H2MemoryPool.allocate(pool.state, 129))
        #expect(c != a)
        H2MemoryPool.deallocate(pool.state, b)
        H2MemoryPool.deallocate(pool.state, c)
    }

    @Test func freeBlocksKeptAreBoundedByTheLimit() {
        let pool = H2MemoryPool(limit: 1000)
        let blocks = (0..<100).map { _ in H2MemoryPool.allocate(pool.state, 64)! }
        for block in blocks { H2MemoryPool.deallocate(pool.state, block) }
        // 15 blocks of 64 bytes fit in 1,000; the rest went back to the C library.
        #expect(pool.cachedBytes == 960)
        pool.trim()
        #expect(pool.cachedBytes == 0)
    }

    @Test func largeBlocksAreNeverKept() throws {
        let pool = H2MemoryPool(limit: 1 << 20)
        let size = H2MemoryPool.largestPooledSize + 1
        let block = try #require(H2MemoryPool.allocate(pool.state, size))
        memset(block, 0x5A, size)
        H2MemoryPool.deallocate(pool.state, block)
        #expect(pool.cachedBytes == 0)
    }

    /// A block nghttp2 wrote to and freed comes back zeroed from `calloc`.
    @Test func zeroedBlocksAreZeroEvenWhenReused() throws {
        let pool = H2MemoryPool(limit: 4096)
        let dirty = try #require(H2MemoryPool.allocate(pool.state, 300))
        memset(dirty, 0xAB, 300)
        H2MemoryPool.deallocate(pool.state, dirty)
        let zeroed = try #require(H2MemoryPool.allocateZeroed(pool.state, 3, 100))
        #expect(zeroed == dirty)
        #expect(UnsafeRawBufferPointer(start: zeroed, count: 300).allSatisfy { $0 == 0 })
        H2MemoryPool.deallocate(pool.state, zeroed)
        #expect(H2MemoryPool.allocateZeroed(pool.state, Int.max, 2) == nil)
    }

    #if os(Linux)
        /// nghttp2's stream map (256 × 16 bytes): page-aligned, zero, not resident until written,
        /// and freed through the pool like any other block.
        @Test func wholePagesStayUntouched() throws {
            let pool = H2MemoryPool(limit: 1 << 20)
            for _ in 0..<8 {
                let block = try #require(H2MemoryPool.allocateZeroed(pool.state, 256, 16))
                #expect(H2MemoryPool.isWholePageBlock(block))
                var page: UInt8 = 0
                precondition(mincore(block, 4096, &page) == 0)
                #expect(page & 1 == 0)
                #expect(UnsafeRawBufferPointer(start: block, count: 4096).allSatisfy { $0 == 0 })
                memset(block, 0xAB, 4096)
                H2MemoryPool.deallocate(pool.state, block)
            }
            #expect(pool.cachedBytes == 0)
        }
    #endif

    @Test func reallocateKeepsTheContents() throws {
        let pool = H2MemoryPool(limit: 1 << 20)
        var block = try #require(H2MemoryPool.allocate(pool.state, 40))
        for i in 0..<40 { block.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        // Within its capacity (64): the same block.
        #expect(H2MemoryPool.reallocate(pool.state, block, 64) == block)
        for size in [65, 500, 5000, 100_000] {
            block = try #require(H2MemoryPool.reallocate(pool.state, block, size))
            #expect((0..<40).allSatisfy { block.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) })
        }
        H2MemoryPool.deallocate(pool.state, block)
        // From nothing, and from a whole-page block.
        let fresh = try #require(H2MemoryPool.reallocate(pool.state, nil, 10))
        H2MemoryPool.deallocate(pool.state, fresh)
        let pages = try #require(H2MemoryPool.allocateZeroed(pool.state, 1, 8192))
        pages.storeBytes(of: 0x77, toByteOffset: 8191, as: UInt8.self)
        let moved = try #require(H2MemoryPool.reallocate(pool.state, pages, 9000))
        #expect(moved.load(fromByteOffset: 8191, as: UInt8.self) == 0x77)
        #expect(moved.load(fromByteOffset: 0, as: UInt8.self) == 0)
        H2MemoryPool.deallocate(pool.state, moved)
    }

    /// Random allocations, frees and reallocations of every kind: each live block holds its own
    /// byte pattern, checked when it is freed (two live blocks never overlap, a reallocation
    /// keeps the contents); only whole-page blocks are page-aligned; the kept bytes stay within
    /// the limit and go to zero with `trim`.
    @Test(arguments: SeededRandom.seeds(count: 16))
    func randomOperationsKeepBlocksApartAndTheBoundHeld(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let pool = H2MemoryPool(limit: 8192)
        var live: [(block: UnsafeMutableRawPointer, size: Int, tag: UInt8)] = []
        var nextTag: UInt8 = 1
        func check(_ entry: (block: UnsafeMutableRawPointer, size: Int, tag: UInt8)) -> Bool {
            UnsafeRawBufferPointer(start: entry.block, count: entry.size).allSatisfy { $0 == entry.tag }
        }
        func randomSize() -> Int {
            switch random.next() % 10 {
            case 0: return Int(random.next() % 3 + 1) * 4096
            case 1: return Int(random.next() % 5000)
            default: return Int(random.next() % 1100)
            }
        }
        for step in 0..<3000 {
            let op = live.isEmpty ? 0 : random.next() % 4
            switch op {
            case 0, 1:
                let size = randomSize()
                let zeroed = random.next() % 2 == 0
                let block = try #require(
                    zeroed
                        ? H2MemoryPool.allocateZeroed(pool.state, 1, size) : H2MemoryPool.allocate(pool.state, size))
                if zeroed {
                    #expect(UnsafeRawBufferPointer(start: block, count: size).allSatisfy { $0 == 0 }, "step \(step)")
                }
                let wholePages = zeroed && size >= H2Session.pageSize && size % H2Session.pageSize == 0
                #expect(H2MemoryPool.isWholePageBlock(block) == wholePages, "step \(step)")
                memset(block, Int32(nextTag), size)
                live.append((block, size, nextTag))
                nextTag = nextTag == 255 ? 1 : nextTag + 1
            case 2:
                let i = Int(random.next() % UInt64(live.count))
                let entry = live.remove(at: i)
                #expect(check(entry), "step \(step)")
                H2MemoryPool.deallocate(pool.state, entry.block)
            default:
                let i = Int(random.next() % UInt64(live.count))
                let size = randomSize()
                let kept = min(size, live[i].size)
                let moved = try #require(H2MemoryPool.reallocate(pool.state, live[i].block, size))
                #expect(
                    UnsafeRawBufferPointer(start: moved, count: kept).allSatisfy { $0 == live[i].tag }, "step \(step)")
                memset(moved, Int32(live[i].tag), size)
                live[i] = (moved, size, live[i].tag)
            }
            #expect(pool.cachedBytes <= 8192)
        }
        for entry in live {
            #expect(check(entry))
            H2MemoryPool.deallocate(pool.state, entry.block)
        }
        pool.trim()
        #expect(pool.cachedBytes == 0)
    }

    /// Two sessions back to back on one pool: once the server session keeps as many closed
    /// streams as it will (nghttp2 keeps up to SETTINGS_MAX_CONCURRENT_STREAMS of them for the
    /// RFC 7540 priority tree, frees the oldest after that), every block a stream needs comes
    /// from the free lists; and the sessions free into the pool when deleted.
    @Test func sessionsReuseBlocksAcrossStreams() throws {
        let pool = H2MemoryPool(limit: H2MemoryPool.loopLimit)
        var settings = H2Session.Settings()
        settings.maxConcurrentStreams = 10
        do {
            let pair = BackToBack(serverSettings: settings, memory: pool)
            var allocatedAfterWarmUp = 0
            let reusedBefore = pool.reused
            for round in 0..<60 {
                if round == 20 { allocatedAfterWarmUp = pool.allocated }
                let id = try pair.client.submitRequest(BackToBack.request(), endStream: true)
                try pair.pump()
                let request = pair.serverEvents.headers(stream: id)
                #expect(request.count == 1, "round \(round)")
                try pair.server.submitResponse(
                    streamID: id, HeaderBlock([(":status", "200"), ("grpc-status", "0")]), endStream: true)
                try pair.pump()
                #expect(pair.clientEvents.headers(stream: id).count == 1, "round \(round)")
                #expect(
                    pair.clientEvents.contains {
                        if case .streamClosed(id, _) = $0 { return true } else { return false }
                    }, "round \(round)")
            }
            #expect(pool.allocated == allocatedAfterWarmUp)
            #expect(pool.reused - reusedBefore >= 40 * 4)
        }
        // Both sessions are gone and freed what they held into the pool, within its bound.
        #expect(pool.cachedBytes > 0 && pool.cachedBytes <= H2MemoryPool.loopLimit)
    }
}
