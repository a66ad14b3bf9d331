import Foundation
import NIOCore

/// The per-loop observer sources; filled at start-up, read by the admin API on each loop.
final class ObserverSources: @unchecked Sendable {
    private let lock = NSLock()
    private var sources: [(EventLoop, HopTimingObserverSource)] = []

    func add(_ source: HopTimingObserverSource, on loop: EventLoop) {
        self.lock.lock()
        self.sources.append((loop, source))
        self.lock.unlock()
    }

    /// Samples that ended at or after `since` (Unix seconds), from every loop.
    func samples(since: Double) async -> [StreamSample] {
        let all = self.lock.withLock { self.sources }
        var out: [StreamSample] = []
        for (loop, source) in all {
            if let s = try? await loop.submit({ source.recent.snapshot(since: since) }).get() {
                out += s
            }
        }
        return out
    }
}
