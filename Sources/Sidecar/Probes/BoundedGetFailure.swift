import AsyncHTTPClient
import Foundation
import H2Proxy
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why ``AsyncHTTPClient/HTTPClient/boundedGet(_:path:headers:timeout:maxBody:)`` got no
/// answer, in the proxy's plain words (`connect to 127.0.0.1:8500 failed: connection refused`),
/// not AsyncHTTPClient's or NIO's type names.
struct BoundedGetFailure: Error, CustomStringConvertible {
    /// What went wrong; the raw value is the `reason` label of `insight_discovery_errors_total`.
    enum Kind: String {
        /// No TCP connection (refused, unreachable, no connection within 3 s, name not found).
        case connect
        /// No whole answer within the request's timeout.
        case timeout
        /// Not an HTTP answer, closed early, or a body over the bound.
        case protocolError = "protocol"
        /// The calling task was cancelled (shutdown): not a failure of the peer.
        case cancelled
    }

    var kind: Kind
    var detail: String
    var description: String { "\(self.kind.rawValue): \(self.detail)" }

    init(kind: Kind, detail: String) {
        self.kind = kind
        self.detail = detail
    }

    /// Names `error` from a request to `address`.
    init(_ error: any Error, address: HostPort, timeout: TimeAmount, maxBody: Int) {
        let connect = { (cause: String) in Self(kind: .connect, detail: "connect to \(address) failed: \(cause)") }
        switch error {
        case is NIOConnectionError, ChannelError.connectTimeout:
            self = connect(UpstreamFailure.describe(error))
        case let e as IOError where Self.connectErrnos.contains(e.errnoCode):
            self = connect(UpstreamFailure.describe(error))
        case let e as HTTPClientError where e == .connectTimeout:
            self = connect("no TCP connection within \(UpstreamFailure.describe(HTTPClient.connectTimeout))")
        case let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout:
            self.init(kind: .timeout, detail: "no response within \(timeout.nanoseconds / 1_000_000) ms")
        case let e as HTTPClientError where e == .remoteConnectionClosed:
            self.init(kind: .protocolError, detail: "connection closed before the response ended")
        case HTTPParserError.invalidEOFState:
            self.init(kind: .protocolError, detail: "connection closed before the response ended")
        case let e as HTTPClientError where e == .cancelled:
            self.init(kind: .cancelled, detail: "request cancelled")
        case is CancellationError:
            self.init(kind: .cancelled, detail: "request cancelled")
        case is NIOTooManyBytesError:
            self.init(kind: .protocolError, detail: "response body over \(maxBody) bytes")
        case is HTTPParserError:
            self.init(kind: .protocolError, detail: "not an HTTP response (\(error))")
        default:
            self.init(kind: .protocolError, detail: UpstreamFailure.describe(error))
        }
    }

    /// `connect(2)` errors: a connection to an IP address fails with these, without the
    /// `NIOConnectionError` a name lookup wraps them in.
    private static let connectErrnos: Set<Int32> = [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, EADDRNOTAVAIL]
}
