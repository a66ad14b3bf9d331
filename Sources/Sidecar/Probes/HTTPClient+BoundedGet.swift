import AsyncHTTPClient
import NIOCore
import NIOHTTP1

extension HTTPClient.Configuration {
    /// How the sidecar asks HTTP APIs (Consul's, a sidecar's admin API for `diagnose`).
    ///
    /// A connection that cannot be made fails the request at once with its cause (no retry
    /// inside the client: the Consul watch backs off itself, and `diagnose` should say at once
    /// that the port is closed). No redirects: a 3xx is an answer like any other status.
    /// - Parameter connectionsPerHost: connections the pool may open to one host; every Consul
    ///   watch holds one for the length of its blocking query, so at least the number of watches.
    static func sidecar(connectionsPerHost: Int = 8) -> Self {
        var c = HTTPClient.Configuration(redirectConfiguration: .disallow, decompression: .disabled)
        c.timeout.connect = HTTPClient.connectTimeout
        c.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = max(8, connectionsPerHost)
        c.connectionPool.retryConnectionEstablishment = false
        c.httpVersion = .http1Only
        return c
    }
}

extension HTTPClient {
    /// An HTTP answer read whole.
    struct BoundedAnswer: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    /// How long a TCP connection for ``boundedGet(_:path:headers:timeout:maxBody:)`` may take.
    static let connectTimeout: TimeAmount = .seconds(3)

    /// The largest answer body ``boundedGet(_:path:headers:timeout:maxBody:)`` reads by
    /// default (8 MiB): a Consul health answer for thousands of instances fits.
    static let maxAnswerBody = 8 << 20

    /// GETs `path` from `address` on a connection of its own (`connection: close`) and reads the
    /// whole answer, with at most `maxBody` bytes of body, within `timeout` (head and body).
    ///
    /// One connection per request, as Consul's blocking queries hold theirs for `wait` anyway:
    /// an agent that goes away is seen as a refused connection on the next query, never as a
    /// stale pooled connection. Cancelling the calling task ends the request at once.
    func boundedGet(
        _ address: HostPort, path: String, headers: [(String, String)] = [], timeout: TimeAmount,
        maxBody: Int = HTTPClient.maxAnswerBody
    ) async throws(BoundedGetFailure) -> BoundedAnswer {
        var request = HTTPClientRequest(url: "http://\(address)\(path)")
        request.headers.add(name: "connection", value: "close")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let deadline = NIODeadline.now() + timeout
        do {
            // The client's deadline ends at the response head; the race bounds the body too.
            return try await withThrowingTaskGroup(of: BoundedAnswer?.self) { group in
                group.addTask { [request] in
                    let response = try await self.execute(request, deadline: deadline)
                    let body = try await response.body.collect(upTo: maxBody)
                    return BoundedAnswer(status: Int(response.status.code), headers: response.headers, body: body)
                }
                group.addTask {
                    try await _Concurrency.Task.sleep(for: .nanoseconds(timeout.nanoseconds))
                    return nil
                }
                defer { group.cancelAll() }
                guard let answer = try await group.next() ?? nil else { throw HTTPClientError.deadlineExceeded }
                return answer
            }
        } catch {
            throw BoundedGetFailure(error, address: address, timeout: timeout, maxBody: maxBody)
        }
    }
}
