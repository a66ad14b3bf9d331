import Foundation
import NIOHTTP1

/// The admin listener's status page and its JSON API.
enum StatusRoute {
    case page
    case hops
    case diagnose
    case demo

    init?(path: String) {
        switch path {
        case "/", "/status": self = .page
        case "/api/v1/hops": self = .hops
        case "/api/v1/diagnose": self = .diagnose
        case "/api/v1/demo": self = .demo
        default: return nil
        }
    }

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var contentType: String
        var body: String
    }

    func respond(status: StatusSource, method: HTTPMethod, query: String) async -> Response {
        switch self {
        case .page:
            return Response(status: .ok, contentType: "text/html; charset=utf-8", body: StatusPage.html)
        case .hops:
            return Self.json(await status.hops())
        case .diagnose:
            return Self.json(await status.diagnose())
        case .demo:
            guard let state = status.demo, let control = status.demoControl else {
                return Response(status: .notFound, contentType: "text/plain", body: "not running a demo\n")
            }
            let params = Self.parse(query: query)
            if !params.isEmpty {
                if let error = control(params) {
                    return Response(status: .badRequest, contentType: "text/plain", body: error + "\n")
                }
            }
            return Self.json(state())
        }
    }

    static func json(_ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return Response(status: .ok, contentType: "application/json", body: body)
    }

    static func parse(query: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            if kv.count == 2 { out[kv[0]] = kv[1] }
        }
        return out
    }
}
