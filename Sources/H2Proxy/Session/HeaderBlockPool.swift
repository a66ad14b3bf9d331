/// Emptied header blocks kept to decode later blocks into, shared by every session of one
/// event loop.
///
/// A block is decoded by one session and let go of by another: a request decoded from a
/// client's connection is given back once its response starts, a response decoded from an
/// upstream connection once it was submitted to the client. Kept per session, each session
/// kept at most a few (a client's connections may be thousands), and a client that sends ten
/// requests in one read decoded six of them into new blocks (two allocations each). Kept per
/// loop, the bound is the loop's (``limit`` blocks of at most ``maxCapacity`` bytes each) and an
/// idle connection holds none. Touched only on the loop that owns it; no lock.
public final class HeaderBlockPool {
    private var spares: [HeaderBlock] = []
    /// Blocks kept at most.
    public let limit: Int
    /// Blocks made because none was spare (for tests and benchmarks).
    public private(set) var made = 0

    /// A block whose storage grew past this many bytes is not kept (one large header list must
    /// not pin its memory in the pool).
    public static let maxCapacity = 2048
    /// The pool of each ``ProxyLoop``: enough for a few hundred streams starting or answered in
    /// one read, about 100 KiB when full of typical blocks (at most about 600 KiB).
    public static let loopLimit = 256

    public init(limit: Int) {
        self.limit = limit
    }

    /// Blocks kept now.
    public var count: Int { self.spares.count }

    /// An empty block: a kept one if there is one, else a new one.
    func take() -> HeaderBlock {
        guard var block = self.spares.popLast() else {
            self.made += 1
            return HeaderBlock()
        }
        block.removeAll()
        return block
    }

    /// Keeps `block` for a later ``take()`` unless the pool is full or the block is large.
    func give(_ block: consuming HeaderBlock) {
        // A block that never held a field has no memory worth keeping (``HeaderBlock/init(capacity:)``).
        guard self.spares.count < self.limit, block.storageCapacity > 0, block.storageCapacity <= Self.maxCapacity
        else { return }
        self.spares.append(block)
    }
}
