/// The spans handed over by the event loops and not yet taken by the exporter, bounded by
/// `tracing.max_queued_spans`: what does not fit is dropped and counted (`queue_full`), and
/// after shutdown began everything offered is (`shutdown`).
///
/// Pure; ``SpanExport`` keeps it under its lock, touched once per batch, never per span.
struct ExportQueue: Sendable {
    let capacity: Int
    private(set) var batches: [[SpanRecord]] = []
    /// Spans in `batches`.
    private(set) var queued = 0
    private(set) var stopping = false

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// What became of an offered batch's spans that were not queued.
    struct Dropped: Equatable {
        var reason: SpanMetrics.DropReason
        var count: Int
    }

    /// Queues as much of `spans` as fits; returns what was dropped, if anything.
    mutating func offer(_ spans: [SpanRecord]) -> Dropped? {
        guard !spans.isEmpty else { return nil }
        if self.stopping { return Dropped(reason: .shutdown, count: spans.count) }
        let room = self.capacity - self.queued
        guard room > 0 else { return Dropped(reason: .queueFull, count: spans.count) }
        if spans.count <= room {
            self.batches.append(spans)
            self.queued += spans.count
            return nil
        }
        self.batches.append(Array(spans.prefix(room)))
        self.queued += room
        return Dropped(reason: .queueFull, count: spans.count - room)
    }

    /// Up to `max` spans, oldest first; `nil` when nothing is queued.
    mutating func take(max: Int) -> [SpanRecord]? {
        guard !self.batches.isEmpty else { return nil }
        var out = self.batches.removeFirst()
        while out.count < max, !self.batches.isEmpty {
            let next = self.batches[0]
            if out.count + next.count > max {
                let n = max - out.count
                out += next.prefix(n)
                self.batches[0] = Array(next.dropFirst(n))
                break
            }
            out += next
            self.batches.removeFirst()
        }
        if out.count > max {
            self.batches.insert(Array(out[max...]), at: 0)
            out.removeLast(out.count - max)
        }
        self.queued -= out.count
        return out
    }

    /// From now on every offer is dropped as `shutdown`; what is queued stays for the last export.
    mutating func stop() {
        self.stopping = true
    }
}
