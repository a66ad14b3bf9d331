import NIOConcurrencyHelpers

/// Whether connecting to each upstream address works, shared by every event loop's pools, so
/// that "cannot connect" and "reachable again" are logged once per change for the process
/// rather than once per loop. Touched when a connection is made or fails, never per frame.
final class UpstreamReachability: Sendable {
    /// The last failure by `host:port`; absent while connecting works.
    private let failures = NIOLockedValueBox<[String: String]>([:])

    /// A connect to `address` failed with `cause`: whether that is news (a new cause) to log.
    func failed(_ address: String, cause: String) -> Bool {
        self.failures.withLockedValue { failures in
            guard failures[address] != cause else { return false }
            failures[address] = cause
            return true
        }
    }

    /// A connection to `address` is ready: the failure it recovered from, if it was failing.
    func succeeded(_ address: String) -> String? {
        self.failures.withLockedValue { $0.removeValue(forKey: address) }
    }
}
