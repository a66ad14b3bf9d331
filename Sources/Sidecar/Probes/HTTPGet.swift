import Foundation
import H2Proxy
import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 GET client (one request per connection), for Consul's API.
enum HTTPGet {
    struct Response: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    struct Failure: Error, CustomStringConvertible {
        enum Kind: String {
            case connect
            case timeout
            case protocolError = "protocol"
        }
        var kind: Kind
        var detail: String
        var description: String { "\(self.kind.rawValue): \(self.detail)" }
    }

    static func get(
        group: EventLoopGroup, host: String, port: Int, path: String, headers: [(String, String)],
        timeout: TimeAmount, maxBody: Int = 8 << 20
    ) async throws -> Response {
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(3))
                .connect(host: host, port: port).get()
        } catch {
            throw Failure(kind: .connect, detail: "connect to \(host):\(port) failed: \(Self.plainCause(error))")
        }
        let promise = channel.eventLoop.makePromise(of: Response.self)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(Failure(kind: .timeout, detail: "no response within \(timeout.nanoseconds / 1_000_000) ms"))
            channel.close(promise: nil)
        }
        do {
            try await channel.eventLoop.submit {
                let sync = channel.pipeline.syncOperations
                try sync.addHandler(HTTPRequestEncoder())
                try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
                try sync.addHandler(Collector(promise: promise, maxBody: maxBody))
                var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
                head.headers.add(name: "host", value: "\(host):\(port)")
                head.headers.add(name: "connection", value: "close")
                for (n, v) in headers { head.headers.add(name: n, value: v) }
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }.get()
            // Cancelled (shutdown): close now rather than wait out a blocking query.
            let response = try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                channel.close(promise: nil)
            }
            timer.cancel()
            try? await channel.close()
            return response
        } catch {
            timer.cancel()
            try? await channel.close()
            throw error
        }
    }

    /// A connect error in plain words ("connection refused"), the same words as the proxy's.
    static func plainCause(_ error: Error) -> String { UpstreamFailure.describe(error) }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Response>
        let maxBody: Int
        var head: HTTPResponseHead?
        var body = ByteBufferAllocator().buffer(capacity: 0)

        init(promise: EventLoopPromise<Response>, maxBody: Int) {
            self.promise = promise
            self.maxBody = maxBody
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch self.unwrapInboundIn(data) {
            case .head(let h): self.head = h
            case .body(var b):
                if self.body.readableBytes + b.readableBytes > self.maxBody {
                    self.promise.fail(Failure(kind: .protocolError, detail: "response body over \(self.maxBody) bytes"))
                    context.close(promise: nil)
                    return
                }
                self.body.writeBuffer(&b)
            case .end:
                guard let head = self.head else { return }
                self.promise.succeed(Response(status: Int(head.status.code), headers: head.headers, body: self.body))
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.promise.fail(Failure(kind: .protocolError, detail: "connection closed before the response ended"))
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            let cause = error is HTTPParserError ? "not an HTTP response (\(error))" : HTTPGet.plainCause(error)
            self.promise.fail(Failure(kind: .protocolError, detail: cause))
            context.close(promise: nil)
        }
    }
}
