import Atomics
import Foundation
import H2Proxy
import Logging
import Metrics
import NIOCore
import NIOPosix

/// The demo's processes, all in one: sidecars, stand-in hops, WAN relay, service, client.
struct DemoTopology: Sendable {
    let portsFrom: Int
    let wanDelay: TimeAmount
    let serviceLatency: TimeAmount
    let loss: Double
    let rate: Double
    let window: Double
    let probeInterval: TimeAmount

    static let note =
        "Demo stand-ins: the Mediary and Gateway hops are plain forwarding listeners, the WAN is a loopback relay "
        + "that delays each chunk (loss is emulated as a 200 ms retransmission), and the service is built into the sidecar."

    struct Running: Sendable {
        let stop: @Sendable () async -> Void
        let control: @Sendable ([String: String]) -> String?
    }

    func start(group: EventLoopGroup, logger: Logger) async throws -> Running {
        let p = self.portsFrom
        let local = "127.0.0.1"
        func hp(_ port: Int) -> HostPort { HostPort(host: local, port: port) }
        let latency = ManagedAtomic<Int64>(self.serviceLatency.nanoseconds)
        let relaySettings = DelayRelay.Settings()
        relaySettings.delay.store(self.wanDelay.nanoseconds, ordering: .relaxed)
        relaySettings.lossPerMillion.store(Int64(self.loss * 1_000_000), ordering: .relaxed)
        let rate = self.rate

        var stops: [@Sendable () async -> Void] = []
        // Each sidecar's servers give loop i of the group shard i of its registry.
        let loops = group.makeIterator().reduce(0) { n, _ in n + 1 }
        func plain(_ listen: Int, upstream: Int, responder: LocalResponder? = nil) async throws -> ProxyServer {
            let server = ProxyServer(
                configuration: ProxyConfiguration(
                    listenHost: local, listenPort: listen, upstreamHost: local, upstreamPort: upstream),
                group: group, metrics: ProxyMetrics(registry: MetricsRegistry()), localResponder: responder,
                logger: logger)
            _ = try await server.start()
            stops.append { await server.drain(timeout: .seconds(1)) }
            return server
        }
        // Region b, innermost first.
        _ = try await plain(p + 8, upstream: 1, responder: DemoService(latency: latency))
        _ = try await plain(p + 9, upstream: 1, responder: DemoService(latency: ManagedAtomic<Int64>(1_000_000)))
        _ = try await plain(p + 7, upstream: p + 8)  // Gateway B stand-in
        _ = try await plain(p + 5, upstream: p + 6)  // Mediary B stand-in
        _ = try await plain(p + 2, upstream: p + 3)  // Mediary A stand-in
        let relay = try await DelayRelay(
            group: group, target: try SocketAddress(ipAddress: local, port: p + 4), settings: relaySettings
        ).start(host: local, port: p + 3)
        stops.append { try? await relay.close() }

        func sidecar(
            hop: String, region: String, listen: Int, upstream: Int, admin: Int, receiver: Bool, targets: [ProbeTarget],
            extraProbers: [Prober] = [], demo: (@Sendable () -> DemoState)? = nil,
            demoControl: (@Sendable ([String: String]) -> String?)? = nil
        ) async throws -> SidecarInstance {
            var c = SidecarConfig()
            c.listen = hp(listen)
            c.upstream = hp(upstream)
            c.admin = hp(admin)
            c.hop = hop
            c.region = region
            c.receiver = receiver
            c.probes.interval = self.probeInterval
            c.probes.timeout = .seconds(2)
            c.probes.targets = targets
            let config = try c.validated()
            var l = logger
            l[metadataKey: "hop"] = "\(hop)"
            let s = try await SidecarInstance.start(
                config: config, registry: MetricsRegistry(loopShards: loops), group: group, logger: l,
                statusWindow: self.window,
                extraProbers: extraProbers, demo: demo, demoControl: demoControl)
            stops.append { await s.stop(drainTimeout: .seconds(1)) }
            return s
        }
        func target(_ name: String, _ port: Int, _ region: String, _ kind: ProbeTarget.Kind) -> ProbeTarget {
            ProbeTarget(name: name, address: hp(port), region: region, kind: kind)
        }
        _ = try await sidecar(
            hop: "gateway-b", region: "b", listen: p + 6, upstream: p + 7, admin: p + 11, receiver: true, targets: [])
        let mediaryB = try await sidecar(
            hop: "mediary-b", region: "b", listen: p + 4, upstream: p + 5, admin: p + 10, receiver: false,
            targets: [target("service-b", p + 8, "b", .health)])
        let state: @Sendable () -> DemoState = {
            DemoState(
                wanDelayMilliseconds: Double(relaySettings.delay.load(ordering: .relaxed)) / 1e6,
                serviceLatencyMilliseconds: Double(latency.load(ordering: .relaxed)) / 1e6,
                loss: Double(relaySettings.lossPerMillion.load(ordering: .relaxed)) / 1e6, rate: rate,
                note: DemoTopology.note)
        }
        let control: @Sendable ([String: String]) -> String? = { params in
            for (key, value) in params {
                switch key {
                case "wan_delay":
                    guard let d = try? DurationValue.parse(value, field: key), d <= .seconds(10) else {
                        return "wan_delay: expected a duration up to 10s, got \(value)"
                    }
                    relaySettings.delay.store(d.nanoseconds, ordering: .relaxed)
                case "service_latency":
                    guard let d = try? DurationValue.parse(value, field: key), d <= .seconds(10) else {
                        return "service_latency: expected a duration up to 10s, got \(value)"
                    }
                    latency.store(d.nanoseconds, ordering: .relaxed)
                case "loss":
                    guard let l = Double(value), (0...1).contains(l) else { return "loss: expected 0-1, got \(value)" }
                    relaySettings.lossPerMillion.store(Int64(l * 1_000_000), ordering: .relaxed)
                default:
                    return "unknown setting \(key): use wan_delay, service_latency or loss"
                }
            }
            return nil
        }
        let mediaryA = try await sidecar(
            hop: "mediary-a", region: "a", listen: p + 1, upstream: p + 2, admin: p, receiver: false,
            targets: [
                target("receiver-b", p + 6, "b", .echo), target("service-b", p + 8, "b", .health),
                target("service-a", p + 9, "a", .health),
            ],
            extraProbers: mediaryB.prober.map { [$0] } ?? [], demo: state, demoControl: control)
        _ = mediaryA

        let client = ProxyServer(
            configuration: ProxyConfiguration(
                listenHost: local, listenPort: 0, upstreamHost: local, upstreamPort: p + 1),
            group: group, metrics: ProxyMetrics(registry: MetricsRegistry()), logger: logger)
        let generator = TrafficGenerator(client: client, target: hp(p + 1), rate: self.rate)
        generator.start()
        let allStops = stops
        return Running(
            stop: {
                generator.stop()
                await client.drain(timeout: .seconds(1))
                for stop in allStops.reversed() { await stop() }
            }, control: control)
    }
}

/// Writes a line to standard output at once (no buffering: the demo's output is read live).
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
