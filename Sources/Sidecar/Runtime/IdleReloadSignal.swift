import Foundation
import Logging

/// SIGHUP reloads certificates; without TLS there is nothing to reload, and the signal is
/// logged (once per signal) rather than ignored without a word or ending the process.
final class IdleReloadSignal: @unchecked Sendable {
    private let source: DispatchSourceSignal

    init(logger: Logger) {
        Foundation.signal(SIGHUP, SIG_IGN)
        self.source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        self.source.setEventHandler {
            logger.notice("SIGHUP received: no TLS certificates configured, nothing to reload")
        }
        self.source.resume()
    }

    func stop() { self.source.cancel() }
}
