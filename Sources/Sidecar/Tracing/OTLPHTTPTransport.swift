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
    /// Per request, from sending to the end of the answer.
    let timeout: TimeAmount

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

    func send(_ body: ByteBuffer) async -> ExportOutcome {
        var request = HTTPClientRequest(url: self.url)
        request.method = .POST
        request.headers = self.headers
        request.body = .bytes(body)
        do {
            let response = try await self.client.execute(request, timeout: self.timeout)
            let code = Int(response.status.code)
            // Read to the end, so that the connection is kept for the next batch.
            let answer = try await response.body.collect(upTo: 1 << 20)
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
