internal import CNGHTTP2

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The memory nghttp2 sessions allocate through (``H2Session/makeMemory(_:)``): small blocks
/// they free are kept on free lists by size and handed out again, shared by the sessions of one
/// event loop.
///
/// Why not the C library's allocator alone: nghttp2 1.52 allocates about nine blocks per
/// proxied request (a stream on each session, an item per frame it queues, a copy of each
/// header list submitted) and frees them when the stream closes. Under load tens of streams of
/// one event loop open and close together, more blocks of one size than glibc's per-thread
/// cache holds (7 per size), so most of them went through its arenas: `_int_malloc` and
/// `_int_free` were about 3.5 % of the sidecar's CPU under small-request load
/// (`Docs/performance.md`). A free list per size class is a pop and a push.
///
/// Layout: every block but a zeroed whole-page one has a 16-byte header in front of it (its
/// size class, its capacity and where the `malloc`ed memory starts), and none of them starts on
/// a page boundary; a zeroed block of whole pages (nghttp2's stream map) is page-aligned and
/// comes from ``untouchedCalloc(_:_:)`` without a header, so that it costs no RSS until
/// written. Blocks up to ``largestPooledSize`` bytes are rounded up to a multiple of
/// ``granule`` and kept on free lists when freed, up to ``limit`` bytes for the whole pool (the
/// rest go back to the C library); larger blocks are never kept.
///
/// Touched only on the event loop that owns it (every session that uses it lives there); no
/// lock. The callbacks reach its state through a plain pointer: no reference counting per call.
public final class H2MemoryPool {
    struct State {
        /// The first free block of each size class (its first word links to the next).
        var freeLists: UnsafeMutablePointer<UnsafeMutableRawPointer?>
        /// Bytes (capacities) of the blocks on the free lists.
        var cachedBytes: Int
        let limit: Int
        /// Blocks handed out from a free list, and blocks allocated from the C library (for
        /// tests and benchmarks).
        var reused: Int
        var allocated: Int
    }

    /// The header in front of a block.
    struct BlockHeader {
        /// The block's size class, or ``largeClass``.
        var sizeClass: UInt32
        /// Bytes from the start of the `malloc`ed memory to the block.
        var offset: UInt32
        /// Bytes the block holds.
        var capacity: Int
    }

    /// Size classes are multiples of this many bytes.
    public static let granule = 32
    /// Size classes: blocks of up to 1,024 bytes are pooled.
    static let classCount = 32
    public static var largestPooledSize: Int { granule * classCount }
    static let headerSize = 16
    static let largeClass = UInt32.max
    /// What tells a zeroed whole-page block from the others: whole-page blocks are aligned to
    /// the page size, which is a multiple of this; no other block is aligned to it. A constant,
    /// so that the test is a mask (``H2Session/pageSize`` is read through a lazy global).
    static let pageBoundary = 4096
    /// The pool of each ``ProxyLoop``: at most this many bytes of free blocks kept.
    public static let loopLimit = 256 << 10

    let state: UnsafeMutablePointer<State>

    /// `limit`: bytes of free blocks kept at most.
    public init(limit: Int) {
        let lists = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: Self.classCount)
        lists.initialize(repeating: nil, count: Self.classCount)
        self.state = .allocate(capacity: 1)
        self.state.initialize(to: State(freeLists: lists, cachedBytes: 0, limit: limit, reused: 0, allocated: 0))
    }

    deinit {
        self.trim()
        self.state.pointee.freeLists.deallocate()
        self.state.deallocate()
    }

    /// Bytes of free blocks kept now.
    public var cachedBytes: Int { self.state.pointee.cachedBytes }
    /// Blocks handed out again from a free list so far.
    public var reused: Int { self.state.pointee.reused }
    /// Blocks allocated from the C library so far.
    public var allocated: Int { self.state.pointee.allocated }

    /// Gives every kept block back to the C library.
    public func trim() {
        let lists = self.state.pointee.freeLists
        for c in 0..<Self.classCount {
            while let block = lists[c] {
                lists[c] = block.load(as: UnsafeMutableRawPointer?.self)
                free(block - Int(Self.header(of: block).pointee.offset))
            }
        }
        self.state.pointee.cachedBytes = 0
    }

    // MARK: The allocator's four functions (on the state, for the C callbacks)

    /// `malloc(size)`.
    static func allocate(_ state: UnsafeMutablePointer<State>, _ size: Int) -> UnsafeMutableRawPointer? {
        guard size <= Self.largestPooledSize else {
            return Self.makeBlock(state, capacity: size, sizeClass: Self.largeClass)
        }
        let sizeClass = (max(size, 1) - 1) / Self.granule
        if let block = state.pointee.freeLists[sizeClass] {
            state.pointee.freeLists[sizeClass] = block.load(as: UnsafeMutableRawPointer?.self)
            state.pointee.cachedBytes -= (sizeClass + 1) * Self.granule
            state.pointee.reused += 1
            return block
        }
        return Self.makeBlock(state, capacity: (sizeClass + 1) * Self.granule, sizeClass: UInt32(sizeClass))
    }

    /// `free(block)`.
    static func deallocate(_ state: UnsafeMutablePointer<State>, _ block: UnsafeMutableRawPointer?) {
        guard let block else { return }
        if Self.isWholePageBlock(block) {
            free(block)
            return
        }
        let header = Self.header(of: block).pointee
        guard header.sizeClass != Self.largeClass, state.pointee.cachedBytes + header.capacity <= state.pointee.limit
        else {
            free(block - Int(header.offset))
            return
        }
        let sizeClass = Int(header.sizeClass)
        block.storeBytes(of: state.pointee.freeLists[sizeClass], as: UnsafeMutableRawPointer?.self)
        state.pointee.freeLists[sizeClass] = block
        state.pointee.cachedBytes += header.capacity
    }

    /// `calloc(count, size)`: a zeroed block; one of whole pages is page-aligned and untouched
    /// (see ``untouchedCalloc(_:_:)``). `nil` when `count * size` overflows.
    static func allocateZeroed(_ state: UnsafeMutablePointer<State>, _ count: Int, _ size: Int)
        -> UnsafeMutableRawPointer?
    {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, bytes >= 0 else { return nil }
        if bytes >= H2Session.pageSize && bytes % H2Session.pageSize == 0 {
            return untouchedCalloc(count, size)
        }
        guard let block = Self.allocate(state, bytes) else { return nil }
        memset(block, 0, bytes)
        return block
    }

    /// `realloc(block, size)`: the same block while `size` fits in it, else a new one with the
    /// contents copied (the old one freed). `nil`, with `block` untouched, when memory runs out.
    static func reallocate(_ state: UnsafeMutablePointer<State>, _ block: UnsafeMutableRawPointer?, _ size: Int)
        -> UnsafeMutableRawPointer?
    {
        guard let block else { return Self.allocate(state, size) }
        let capacity: Int
        if Self.isWholePageBlock(block) {
            capacity = insight_malloc_usable_size(block)
        } else {
            capacity = Self.header(of: block).pointee.capacity
            if size <= capacity { return block }
        }
        guard let moved = Self.allocate(state, size) else { return nil }
        moved.copyMemory(from: block, byteCount: min(capacity, size))
        Self.deallocate(state, block)
        return moved
    }

    // MARK: Blocks

    /// A block of `capacity` bytes from the C library, with its header; never page-aligned.
    private static func makeBlock(_ state: UnsafeMutablePointer<State>, capacity: Int, sizeClass: UInt32)
        -> UnsafeMutableRawPointer?
    {
        let (total, overflow) = capacity.addingReportingOverflow(2 * Self.headerSize)
        guard !overflow, let base = malloc(total) else { return nil }
        // `malloc` returns 16-byte aligned memory; if the block would start on a page boundary, it starts
        // 16 bytes later (then it cannot).
        var offset = Self.headerSize
        if Int(bitPattern: base + offset) & (Self.pageBoundary - 1) == 0 { offset += Self.headerSize }
        let block = base + offset
        Self.header(of: block).initialize(
            to: BlockHeader(sizeClass: sizeClass, offset: UInt32(offset), capacity: capacity))
        state.pointee.allocated += 1
        return block
    }

    @inline(__always)
    private static func header(of block: UnsafeMutableRawPointer) -> UnsafeMutablePointer<BlockHeader> {
        (block - Self.headerSize).assumingMemoryBound(to: BlockHeader.self)
    }

    /// Whether `block` is a zeroed whole-page block (the only page-aligned ones).
    @inline(__always)
    static func isWholePageBlock(_ block: UnsafeMutableRawPointer) -> Bool {
        Int(bitPattern: block) & (Self.pageBoundary - 1) == 0
    }
}
