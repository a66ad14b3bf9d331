internal import CNGHTTP2

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension H2Session {
    /// The allocator nghttp2 uses for a session: `pool`'s (see ``H2MemoryPool``), whose state
    /// the callbacks reach through the user pointer (the session holds the pool).
    ///
    /// A zeroed block of whole pages comes back untouched, so that it costs no RSS until
    /// nghttp2 writes to it. Why: libnghttp2 1.52 `calloc`s its stream map (256 buckets of 16
    /// bytes, one 4 KiB page) when a session is created. An idle client connection never opens a
    /// stream, so the map is never written, but glibc's `calloc` clears memory it reuses, and
    /// that write alone made the page resident: 3.9 KiB of the 18.0 KiB RSS an idle client
    /// connection cost (`Benchmarks/idle-connections.sh`; `Docs/performance.md`, "Idle client
    /// connections").
    static func makeMemory(_ pool: H2MemoryPool) -> nghttp2_mem {
        nghttp2_mem(
            mem_user_data: UnsafeMutableRawPointer(pool.state),
            malloc: { size, state in
                H2MemoryPool.allocate(state!.assumingMemoryBound(to: H2MemoryPool.State.self), size)
            },
            free: { block, state in
                H2MemoryPool.deallocate(state!.assumingMemoryBound(to: H2MemoryPool.State.self), block)
            },
            calloc: { count, size, state in
                H2MemoryPool.allocateZeroed(state!.assumingMemoryBound(to: H2MemoryPool.State.self), count, size)
            },
            realloc: { block, size, state in
                H2MemoryPool.reallocate(state!.assumingMemoryBound(to: H2MemoryPool.State.self), block, size)
            })
    }

    /// The size of a memory page in bytes (`sysconf(_SC_PAGESIZE)`, 4096 on x86-64 Linux).
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// `calloc(count, size)`; a block of whole pages is page-aligned, and its pages are given back
/// to the kernel (`MADV_DONTNEED`), which maps them again zero-filled on the first write.
/// Freed with `free` like any other block.
func untouchedCalloc(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    #if os(Linux)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        // As calloc: nil when the size overflows (decided here: AddressSanitizer's calloc aborts
        // on such a size instead of returning nil).
        guard !overflow else { return nil }
        let page = H2Session.pageSize
        guard bytes >= page, bytes % page == 0 else { return calloc(count, size) }
        var block: UnsafeMutableRawPointer?
        guard posix_memalign(&block, page, bytes) == 0, let block else { return nil }
        if madvise(block, bytes, MADV_DONTNEED) != 0 { memset(block, 0, bytes) }
        return block
    #else
        return calloc(count, size)
    #endif
}
