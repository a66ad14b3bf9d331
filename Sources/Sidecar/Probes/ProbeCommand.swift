import ArgumentParser
import Foundation
import H2Proxy
import Logging
import Metrics
import NIOCore
import NIOPosix

/// `insight-sidecar probe`: one probe, printed with its per-hop breakdown; the exit code is
/// grpc_health_probe's (0 success, 1 invalid arguments, 2 connect failure, 3 RPC error or
/// timeout, 4 not serving), so it serves as a Kubernetes exec probe.
public struct ProbeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "probe", abstract: "Run one health or echo probe and print the per-hop breakdown.")

    @Option(name: .long, help: "The target, HOST:PORT.")
    var target: String

    @Option(name: .long, help: "gRPC health service name to check (default: the whole server).")
    var service: String?

    @Flag(
        name: .long,
        help: "Send insight.probe.v1.Probe/Echo (answered by a receiver sidecar) instead of a health check.")
    var echo = false

    @Option(name: .long, help: "Deadline, sent as grpc-timeout, e.g. 1s.")
    var timeout = "1s"

    @Option(name: .long, help: "Connect here (e.g. a sidecar or a Mediary) instead of to the target.")
    var via: String?

    @Option(
        name: .long, parsing: .singleValue, help: "Extra request header K=V (repeatable), e.g. :authority=gateway-b.")
    var header: [String] = []

    @Option(name: .long, help: "Hop name this probe reports as in insight-hops.")
    var hop = "probe"

    @Flag(name: .long, help: "Print the result as one JSON object.")
    var json = false

    public init() {}

    public func run() async throws {
        do {
            try await self.probe()
        } catch let error as ConfigError {
            // Bad flags exit 1, as grpc_health_probe's do, so that 2 means "cannot connect".
            throw CommandFailure(message: "\(error)", exitCode: 1)
        }
    }

    private func probe() async throws {
        let target = try HostPort(parsing: self.target, field: "target")
        let via = try self.via.map { v throws(ConfigError) in try HostPort(parsing: v, field: "via") }
        let timeout = try DurationValue.parse(self.timeout, field: "timeout")
        // grpc_health_probe rejects a timeout of zero or less as a command-line error too.
        guard timeout > .zero else {
            throw ConfigError(field: "timeout", reason: "must be more than 0, got \(self.timeout)")
        }
        var routeHeaders: [HeaderPair] = []
        for h in self.header {
            guard let eq = h.firstIndex(of: "="), eq != h.startIndex else {
                throw ConfigError(field: "header", reason: "expected K=V, got \"\(h)\"")
            }
            routeHeaders.append(HeaderPair(name: String(h[..<eq]), value: String(h[h.index(after: eq)...])))
        }
        try SidecarConfig.checkName(self.hop, field: "hop")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let address = via ?? target
        var logger = Logger(label: "insight-probe")
        logger.logLevel = .critical
        var timing = TimingOptions(hop: self.hop, region: "probe")
        timing.maxRoutes = 4
        let traffic = TrafficMetrics(
            registry: MetricsRegistry(loopShards: 1), hop: self.hop, region: "probe", headerErrorReasons: [])
        let proxy = ProxyServer(
            configuration: ProxyConfiguration(
                listenHost: "127.0.0.1", listenPort: 0, upstreamHost: address.host, upstreamPort: address.port),
            group: group, metrics: ProxyMetrics(registry: MetricsRegistry()),
            observerFactory: HopTimingObserverFactory(options: timing, metrics: traffic, accessLog: nil), logger: logger
        )
        var config = ProbeConfig()
        config.routeHeaders["remote"] = routeHeaders
        var probeTarget = ProbeTarget(
            name: self.target, address: target, region: "remote", kind: self.echo ? .echo : .health)
        probeTarget.service = self.service ?? ""
        // Region "remote" with the sidecar's own region "probe": the request goes to `address`
        // (the --via hop, else the target) with the route headers.
        let request = ProbeRequest(hop: self.hop, region: "probe", upstream: address, config: config)
        var (_, headers, body) = request.make(for: probeTarget, timeout: timeout)
        if routeHeaders.isEmpty {
            headers.replace(name: ":authority", value: target.description)
        }
        let call = try await proxy.call(
            host: address.host, port: address.port, request: headers, body: body, timeout: timeout,
            on: group.next()
        ).get()
        let outcome = ProbeOutcome(call, kind: probeTarget.kind, address: address)
        await proxy.drain(timeout: .zero)
        try? await group.shutdownGracefully()
        self.print(outcome, target: target, via: via)
        throw ExitCode(outcome.result.exitCode)
    }

    private func print(_ o: ProbeOutcome, target: HostPort, via: HostPort?) {
        if self.json {
            var fields: [String: Any] = [
                "result": o.result.rawValue, "code": o.code, "message": o.message,
                "ms": (o.seconds * 1e6).rounded() / 1e3,
                "target": target.description, "kind": self.echo ? "echo" : "health",
                "segments": o.segments.map {
                    ["hop": $0.hop, "next": $0.next, "ms": $0.milliseconds] as [String: Any]
                },
            ]
            if let via { fields["via"] = via.description }
            if let h = o.receiverHop { fields["receiver"] = ["hop": h, "region": o.receiverRegion ?? ""] }
            let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data()
            Swift.print(String(decoding: data, as: UTF8.self))
            return
        }
        let kind = self.echo ? "echo" : "health"
        let path = via.map { " via \($0)" } ?? ""
        Swift.print(
            "\(kind) probe of \(target)\(path): \(o.result.rawValue) (\(o.code)) in \(String(format: "%.3f", o.seconds * 1000)) ms"
                + (o.message.isEmpty ? "" : ": \(o.message)"))
        if let h = o.receiverHop { Swift.print("answered by \(h) in region \(o.receiverRegion ?? "?")") }
        if !o.segments.isEmpty {
            Swift.print("  segment               next                      ms")
            for s in o.segments {
                Swift.print(
                    "  " + s.hop.padding(toLength: 22, withPad: " ", startingAt: 0)
                        + s.next.padding(toLength: 22, withPad: " ", startingAt: 0)
                        + String(format: "%8.3f", s.milliseconds))
            }
        }
    }
}
