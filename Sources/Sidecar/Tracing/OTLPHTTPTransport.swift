import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// POSTs encoded `ExportTraceServiceRequest`s to `<tracing.otlp_endpoint>/v1/traces` with
/// AsyncHTTPClient, on its own event loops (NIO's singleton group), never the proxy's.
struct OTLPHTTPTransport: Sendable {
    let client: HTTPClient
    let url: String
    /// `content-type: application/x-protobuf` and `tracing.headers`.
    let headers: HTTPHeaders
    /// Per request, for the whole exchange: connecting, sending, the answer's head and its body.
    /// A collector that answers at once but trickles the body runs into it too.
    let timeout: TimeAmount
    /// The most bytes of an answer's body read (an OTLP answer is a few bytes); a longer body
    /// ends the request as `.failed`.
    static let maxAnswerBytes = 1 << 20

    init(options: TracingOptions, timeout: TimeAmount = .seconds(4)) {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(2))
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.url = options.tracesURL
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/x-protobuf")
        for h in options.headers { headers.add(name: h.name, value: h.value) }
        self.headers = headers
        self.timeout = timeout
    }

    /// One export: ``ExportOutcome/timedOut`` when the whole exchange, body included, takes
    /// longer than ``timeout``; the request is then cancelled (its connection closed).
    func send(_ body: ByteBuffer) async -> ExportOutcome {
        let request = self.request(body)
        let deadline = NIODeadline.now() + self.timeout
        let timeout = self.timeout
        return await withTaskGroup(of: ExportOutcome?.self) { group in
            group.addTask { await self.exchange(request, deadline: deadline) }
            group.addTask {
                // AsyncHTTPClient's deadline ends when the answer's head arrives; this one
                // covers the body as well.
                do {
                    try await Task.sleep(nanoseconds: UInt64(max(0, timeout.nanoseconds)))
                    return .timedOut
                } catch {
                    return nil
                }
            }
            defer { group.cancelAll() }
            while let next = await group.next() {
                if let outcome = next { return outcome }
            }
            return .failed
        }
    }

    private func request(_ body: ByteBuffer) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: self.url)
        request.method = .POST
        request.headers = self.headers
        request.body = .bytes(body)
        return request
    }

    /// The request and the whole answer; cancelled by ``send(_:)`` when its deadline passes.
    private func exchange(_ request: HTTPClientRequest, deadline: NIODeadline) async -> ExportOutcome {
        do {
            let response = try await self.client.execute(request, deadline: deadline)
            let code = Int(response.status.code)
            // Read to the end, so that the connection is kept for the next batch.
            let answer = try await response.body.collect(upTo: Self.maxAnswerBytes)
            if (200..<300).contains(code) {
                return .accepted(rejected: OTLPTraceResponse(decoding: answer).rejectedSpans)
            }
            return .status(code, retryAfter: response.headers.first(name: "retry-after"))
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout {
            return .timedOut
        } catch {
            return .failed
        }
    }

    func shutdown() async {
        try? await self.client.shutdown()
    }
}
