/// The bounded hand-over between the event loops that end streams and the access log's writer
/// thread: pure state, no locks or I/O (``AccessLog`` holds it under its lock).
///
/// An event loop never waits for the log: when ``capacity`` entries are already waiting, the
/// new one is dropped and counted. The writer takes everything waiting in one batch.
struct AccessLogQueue<Element> {
    /// What ``offer(_:)`` did with an entry.
    enum Offer: Equatable {
        /// Queued; `wakeWriter` when the writer is asleep and must be woken to take it.
        case queued(wakeWriter: Bool)
        /// The queue held ``capacity`` entries already: the entry is gone.
        case dropped
    }

    /// Entries that may wait at once.
    let capacity: Int
    private(set) var waiting: [Element] = []
    /// Entries dropped because the queue was full, since start.
    private(set) var dropped: UInt64 = 0
    /// The writer is blocked waiting for an entry (it said so with ``writerWaits()``).
    private(set) var writerAsleep = false

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    mutating func offer(_ element: Element) -> Offer {
        guard self.waiting.count < self.capacity else {
            self.dropped += 1
            return .dropped
        }
        self.waiting.append(element)
        let wake = self.writerAsleep
        self.writerAsleep = false
        return .queued(wakeWriter: wake)
    }

    /// The writer takes every waiting entry; `spare` (emptied, its capacity kept) becomes the
    /// new queue, so neither side allocates once both arrays have grown.
    mutating func take(swappingWith spare: inout [Element]) {
        spare.removeAll(keepingCapacity: true)
        swap(&self.waiting, &spare)
    }

    /// The writer found nothing to take and is about to wait: the next ``offer(_:)`` wakes it.
    /// Returns false (do not wait) when entries came in meanwhile.
    mutating func writerWaits() -> Bool {
        guard self.waiting.isEmpty else { return false }
        self.writerAsleep = true
        return true
    }
}
