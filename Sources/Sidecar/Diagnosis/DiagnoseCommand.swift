import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore

/// `insight-sidecar diagnose --admin HOST:PORT`: asks a sidecar which hop to blame and prints
/// the answer as a table.
public struct DiagnoseCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "diagnose", abstract: "Name the hop to blame, from a running sidecar's recent measurements.")

    @Option(name: .long, help: "The sidecar's admin listener, HOST:PORT.")
    var admin: String

    @Flag(name: .long, help: "Print the JSON as received.")
    var json = false

    public init() {}

    /// How a path is named in the table: `service/method [traffic]`, or for a probe
    /// `service/method [probe → target]`, so that probes of several targets are told apart.
    static func title(_ path: Diagnosis.PathVerdict) -> String {
        let source = path.target.map { "\(path.source) → \($0)" } ?? path.source
        return "\(path.service)/\(path.method) [\(source)]"
    }

    public func run() async throws {
        let admin = try HostPort(parsing: self.admin, field: "admin")
        // Not `HTTPClient.shared`: that one retries a refused connection until the timeout.
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .sidecar())
        let response: HTTPClient.BoundedAnswer
        do {
            response = try await client.boundedGet(admin, path: "/api/v1/diagnose", timeout: .seconds(10))
            try? await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw CommandFailure(message: "cannot get a diagnosis from \(admin): \(error)", exitCode: 1)
        }
        guard response.status == 200 else {
            throw CommandFailure(message: "cannot get a diagnosis from \(admin): HTTP \(response.status)", exitCode: 1)
        }
        if self.json {
            print(String(buffer: response.body))
            return
        }
        let report = try JSONDecoder().decode(DiagnoseReport.self, from: Data(response.body.readableBytesView))
        print("diagnosis from \(report.hop), recent \(Int(report.windowSeconds)) s vs baseline before it")
        for path in report.paths {
            print("\n\(Self.title(path)): \(path.verdict)")
            guard !path.segments.isEmpty else { continue }
            print(
                "  " + "segment".padding(toLength: 26, withPad: " ", startingAt: 0)
                    + "   base p50  recent p50   base p99  recent p99   Δp50 ms  conf")
            for s in path.segments {
                let name = "\(s.segment) → \(s.next)"
                let mark = path.blame?.segment == s.segment && path.blame?.next == s.next ? "*" : " "
                print(
                    mark + " " + name.padding(toLength: 26, withPad: " ", startingAt: 0)
                        + String(
                            format: " %10.2f  %10.2f  %9.2f  %10.2f  %+8.2f  %4.2f", s.baselineP50, s.recentP50,
                            s.baselineP99, s.recentP99, s.deltaP50, s.confidence))
            }
        }
    }
}
