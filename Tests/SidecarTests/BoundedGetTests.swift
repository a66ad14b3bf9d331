import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Sidecar

/// `HTTPClient.boundedGet` against a loopback server that answers every connection with fixed
/// bytes (or nothing): the failures Consul's watches and `diagnose` name in plain words.
@Suite(.timeLimit(.minutes(5))) struct BoundedGetTests {
    /// Writes `answer` once the request arrives, then closes if `close`; an empty answer never
    /// answers.
    private final class CannedAnswer: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let answer: [UInt8]
        let close: Bool
        var answered = false

        init(answer: [UInt8], close: Bool) {
            self.answer = answer
            self.close = close
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !self.answered, !self.answer.isEmpty else { return }
            self.answered = true
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: self.answer)), promise: nil)
            if self.close { context.close(promise: nil) }
        }
    }

    /// Runs `body` with a client and a server answering `answer`, then shuts both down.
    private func withServer<T>(
        answer: String, close: Bool = false, _ body: (HTTPClient, HostPort) async throws -> T
    ) async throws -> T {
        let bytes = Array(answer.utf8)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CannedAnswer(answer: bytes, close: close))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .sidecar())
        let address = HostPort(host: "127.0.0.1", port: server.localAddress!.port!)
        let result: Result<T, Error>
        do {
            result = .success(try await body(client, address))
        } catch {
            result = .failure(error)
        }
        try await client.shutdown()
        try await server.close()
        return try result.get()
    }

    private func failure(
        _ client: HTTPClient, _ address: HostPort, timeout: TimeAmount = .seconds(5), maxBody: Int = 100
    ) async -> BoundedGetFailure? {
        do {
            _ = try await client.boundedGet(address, path: "/v1/x", timeout: timeout, maxBody: maxBody)
            return nil
        } catch {
            return error
        }
    }

    @Test func answerIsReadWhole() async throws {
        let body = String(repeating: "x", count: 100)
        let answer = try await self.withServer(
            answer: "HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-consul-index: 42\r\n\r\n\(body)"
        ) { client, address in
            try await client.boundedGet(address, path: "/v1/x", timeout: .seconds(5), maxBody: 100)
        }
        #expect(answer.status == 200)
        #expect(answer.headers.first(name: "x-consul-index") == "42")
        #expect(String(buffer: answer.body) == body)
    }

    /// A body over `maxBody` is refused, announced (`content-length`) or streamed (chunked).
    @Test(arguments: [
        "content-length: 101\r\n\r\n" + String(repeating: "x", count: 101),
        "transfer-encoding: chunked\r\n\r\n40\r\n" + String(repeating: "x", count: 64) + "\r\n40\r\n"
            + String(repeating: "y", count: 64) + "\r\n0\r\n\r\n",
    ])
    func bodyOverTheBoundIsRefused(_ rest: String) async throws {
        let failure = try await self.withServer(answer: "HTTP/1.1 200 OK\r\n" + rest) { client, address in
            await self.failure(client, address, maxBody: 100)
        }
        #expect(failure?.kind == .protocolError)
        #expect(failure?.detail == "response body over 100 bytes")
    }

    @Test func notHTTPIsAProtocolError() async throws {
        let failure = try await self.withServer(answer: "\u{0}\u{1} this is not HTTP at all\r\n\r\n", close: true) {
            client, address in await self.failure(client, address)
        }
        #expect(failure?.kind == .protocolError)
        #expect(failure?.detail.hasPrefix("not an HTTP response") == true, "\(String(describing: failure))")
    }

    @Test func closedBeforeTheEndIsAProtocolError() async throws {
        let failure = try await self.withServer(
            answer: "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", close: true
        ) { client, address in await self.failure(client, address) }
        #expect(failure?.kind == .protocolError)
        #expect(failure?.detail == "connection closed before the response ended", "\(String(describing: failure))")
    }

    /// No answer at all, and a head whose body stalls: both end at the timeout (the client's
    /// own deadline stops at the head).
    @Test(arguments: ["", "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes."])
    func noWholeAnswerIsATimeout(_ answer: String) async throws {
        let start = ContinuousClock.now
        let failure = try await self.withServer(answer: answer) { client, address in
            await self.failure(client, address, timeout: .milliseconds(300))
        }
        let elapsed = ContinuousClock.now - start
        #expect(failure?.kind == .timeout)
        #expect(failure?.detail == "no response within 300 ms")
        // Far from both the 300 ms and "never"; loose because tests running in parallel can
        // hold the cooperative pool this test resumes on for seconds (under the sanitizers).
        #expect(elapsed < .seconds(30), "took \(elapsed)")
    }

    /// A refused connection fails at once (no retry until the timeout) and says so in plain
    /// words ("SingleConnectionFailure(…)" or "NIOConnectionError" before).
    @Test(arguments: ["127.0.0.1", "localhost"])
    func refusedConnectionReadsAsPlainWordsAtOnce(_ host: String) async throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .sidecar())
        let start = ContinuousClock.now
        // Port 1 on loopback: nothing listens there.
        let failure = await self.failure(client, HostPort(host: host, port: 1), timeout: .seconds(120))
        let elapsed = ContinuousClock.now - start
        try await client.shutdown()
        #expect(failure?.kind == .connect)
        #expect(failure?.detail == "connect to \(host):1 failed: connection refused")
        // With the client's own retries it would retry until the 120 s timeout. The bound is
        // loose because tests running in parallel can hold the cooperative pool for seconds.
        #expect(elapsed < .seconds(30), "took \(elapsed)")
    }

    /// Shutdown: cancelling the task ends a blocking query at once, as `cancelled`.
    @Test func cancellationEndsTheRequestAtOnce() async throws {
        let (kind, elapsed) = try await self.withServer(answer: "") { client, address in
            let start = ContinuousClock.now
            let query = Task { await self.failure(client, address, timeout: .seconds(300)) }
            try await Task.sleep(for: .milliseconds(200))
            query.cancel()
            let failure = await query.value
            return (failure?.kind, ContinuousClock.now - start)
        }
        #expect(kind == .cancelled)
        // Far from the 300 s timeout; loose for the same reason as above.
        #expect(elapsed < .seconds(60), "took \(elapsed)")
    }

    /// Every watch holds a connection for its blocking query: the pool must allow them all,
    /// or the watches past AsyncHTTPClient's default 8 would wait for a free one.
    @Test func consulPoolHasAConnectionPerWatch() {
        var c = ConsulConfig()
        c.services = (0..<5).map { ConsulConfig.Service(name: "s\($0)") }
        c.datacenters = ["dc1", "dc2", "dc3"]
        let pool = TargetDiscovery.consulClientConfiguration(c).connectionPool
        #expect(pool.concurrentHTTP1ConnectionsPerHostSoftLimit == 15)
        #expect(pool.retryConnectionEstablishment == false)
    }
}
