import Foundation

/// One event loop's routes by request path: the `:path` bytes up to any `?`, so that a new
/// stream finds its route without building a `String` and the query string never makes a
/// new entry (`/a/b?x=1` and `/a/b?x=2` are one route, ``HopTimingObserverSource/serviceAndMethod(_:)``).
///
/// Open addressing over the process's seeded `Hasher` (paths come from the network: no
/// chosen-collision probing), at most `limit` entries in twice as many slots; past `limit`
/// a path is simply not remembered.
struct RouteCache {
    /// Hash of each slot's path; 0 marks an empty slot (a path hashing to 0 is stored as 1).
    private var hashes: [Int]
    private var paths: [[UInt8]]
    private var routes: [LoopRoute?]
    /// Paths remembered.
    private(set) var count = 0
    /// The slot last found or filled: ``recent(_:)`` checks it before any hashing, since
    /// streams come in runs on one route.
    private var lastSlot = -1
    /// Paths remembered at most.
    let limit: Int

    init(limit: Int) {
        self.limit = max(0, limit)
        var slots = 8
        while slots < 2 * self.limit { slots *= 2 }
        self.hashes = Array(repeating: 0, count: slots)
        self.paths = Array(repeating: [], count: slots)
        self.routes = Array(repeating: nil, count: slots)
    }

    /// The part of `path` that names the route: everything before the first `?`.
    static func routePath(_ path: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        guard let q = path.firstIndex(of: UInt8(ascii: "?")) else { return path }
        return UnsafeBufferPointer(rebasing: path[..<q])
    }

    static func hash(_ routePath: UnsafeBufferPointer<UInt8>) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: UnsafeRawBufferPointer(routePath))
        let h = hasher.finalize()
        return h == 0 ? 1 : h
    }

    /// The route of the slot last found or filled, if `routePath` is its path (no hashing).
    func recent(_ routePath: UnsafeBufferPointer<UInt8>) -> LoopRoute? {
        guard self.lastSlot >= 0, Self.equal(self.paths[self.lastSlot], routePath) else { return nil }
        return self.routes[self.lastSlot]
    }

    /// The route remembered for `routePath` (see ``routePath(_:)``) whose ``hash(_:)`` is `hash`.
    mutating func route(for routePath: UnsafeBufferPointer<UInt8>, hash: Int) -> LoopRoute? {
        let mask = self.hashes.count - 1
        var i = hash & mask
        while self.hashes[i] != 0 {
            if self.hashes[i] == hash && Self.equal(self.paths[i], routePath) {
                self.lastSlot = i
                return self.routes[i]
            }
            i = (i + 1) & mask
        }
        return nil
    }

    private static func equal(_ stored: [UInt8], _ path: UnsafeBufferPointer<UInt8>) -> Bool {
        stored.withUnsafeBufferPointer { s in
            s.count == path.count && (s.count == 0 || memcmp(s.baseAddress!, path.baseAddress!, s.count) == 0)
        }
    }

    /// Remembers `route` for `routePath` unless `limit` paths are remembered already.
    mutating func insert(_ route: LoopRoute, for routePath: UnsafeBufferPointer<UInt8>, hash: Int) {
        guard self.count < self.limit else { return }
        let mask = self.hashes.count - 1
        var i = hash & mask
        while self.hashes[i] != 0 {
            if self.hashes[i] == hash && Self.equal(self.paths[i], routePath) { return }
            i = (i + 1) & mask
        }
        self.hashes[i] = hash
        self.paths[i] = Array(routePath)
        self.routes[i] = route
        self.count += 1
        self.lastSlot = i
    }
}
