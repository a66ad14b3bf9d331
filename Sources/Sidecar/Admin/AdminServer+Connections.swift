import NIOCore

extension AdminServer {
    /// The open admin connections, oldest first, and which one to close when one too many is open.
    ///
    /// Past the cap the oldest connection is closed, not the new one: a client that opens
    /// connections and sends nothing on them would otherwise lock out kubelet probes and scrapes
    /// until ``AdminHandler/StateMachine`` closes them for idling; this way it must keep opening
    /// `maxConnections` connections faster than a probe is answered.
    struct Connections {
        let maxConnections: Int
        private(set) var open: [ObjectIdentifier] = []

        init(maxConnections: Int) {
            self.maxConnections = maxConnections
        }

        /// Records a new connection; returns the one to close, if the cap is exceeded.
        mutating func opened(_ id: ObjectIdentifier) -> ObjectIdentifier? {
            self.open.append(id)
            return self.open.count > self.maxConnections ? self.open.removeFirst() : nil
        }

        mutating func closed(_ id: ObjectIdentifier) {
            if let i = self.open.firstIndex(of: id) { self.open.remove(at: i) }
        }
    }
}
