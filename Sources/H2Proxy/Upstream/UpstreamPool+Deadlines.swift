import NIOCore

extension UpstreamPool {
    /// Streams waiting for a slot on an upstream connection, oldest first, each with the time
    /// it joined.
    ///
    /// The queue is FIFO, so its head is always the next to pass the wait deadline: one timer
    /// per pool, aimed at the head, serves every waiting stream.
    struct WaitQueue<Element> {
        private var entries = CircularBuffer<(element: Element, since: NIODeadline)>()

        var isEmpty: Bool { self.entries.isEmpty }
        var count: Int { self.entries.count }
        var first: Element? { self.entries.first?.element }

        mutating func append(_ element: Element, now: NIODeadline) {
            self.entries.append((element, now))
        }

        mutating func removeFirst() -> Element {
            self.entries.removeFirst().element
        }

        /// Takes the first element matching `predicate` out of the queue (a stream that gave
        /// up); whether there was one.
        @discardableResult
        mutating func removeFirst(where predicate: (Element) -> Bool) -> Bool {
            guard let i = self.entries.firstIndex(where: { predicate($0.element) }) else { return false }
            self.entries.remove(at: i)
            return true
        }

        /// Empties the queue, oldest first.
        mutating func removeAll() -> [Element] {
            defer { self.entries.removeAll() }
            return self.entries.map(\.element)
        }

        /// When the head passes `timeout`; nil while nothing waits.
        func deadline(timeout: TimeAmount) -> NIODeadline? {
            self.entries.first.map { $0.since + timeout }
        }

        /// Removes and returns, oldest first, every element that has waited `timeout` or longer.
        mutating func removeExpired(now: NIODeadline, timeout: TimeAmount) -> [Element] {
            var expired: [Element] = []
            while let head = self.entries.first, head.since + timeout <= now {
                expired.append(self.entries.removeFirst().element)
            }
            return expired
        }
    }

    /// Connections without streams, each with the time its last stream ended (or it opened).
    struct IdleConnections<Element: AnyObject> {
        private var since: [ObjectIdentifier: (element: Element, since: NIODeadline)] = [:]

        var isEmpty: Bool { self.since.isEmpty }

        /// `element` has no stream since `now`; an earlier mark is kept.
        mutating func markIdle(_ element: Element, now: NIODeadline) {
            let key = ObjectIdentifier(element)
            if self.since[key] == nil { self.since[key] = (element, now) }
        }

        /// `element` carries a stream again, or is gone.
        mutating func forget(_ element: Element) {
            guard !self.since.isEmpty else { return }
            self.since.removeValue(forKey: ObjectIdentifier(element))
        }

        /// When the first idle connection passes `timeout`; nil while none is idle.
        func deadline(timeout: TimeAmount) -> NIODeadline? {
            // A loop, not `map(\.since)`: a key path into a tuple of the generic `Element` is
            // instantiated at run time on every call (4 % of a prober's CPU).
            var earliest: NIODeadline?
            for entry in self.since.values where earliest.map({ entry.since < $0 }) ?? true {
                earliest = entry.since
            }
            return earliest.map { $0 + timeout }
        }

        /// Removes and returns every connection idle for `timeout` or longer.
        mutating func removeExpired(now: NIODeadline, timeout: TimeAmount) -> [Element] {
            var expired: [Element] = []
            for (key, entry) in self.since where entry.since + timeout <= now {
                expired.append(entry.element)
                self.since.removeValue(forKey: key)
            }
            return expired
        }
    }
}
