import ArgumentParser
import Atomics
import Foundation
import H2Proxy
import Logging
import Metrics
import NIOCore
import NIOPosix

/// `insight-sidecar demo`: a complete two-region topology on loopback, with traffic and
/// probes, and the status page. What `make run` starts.
public struct DemoCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a two-region demo on loopback: traffic, probes, per-hop segments and the status page.")

    @Option(name: .long, help: "One-way delay of the emulated WAN link between region a and b.")
    var wanDelay = "30ms"

    @Option(name: .long, help: "Latency of the demo gRPC service behind gateway-b.")
    var serviceLatency = "5ms"

    @Option(name: .long, help: "Probability that a chunk on the WAN link costs a 200 ms retransmission.")
    var loss = 0.0

    @Option(name: .long, help: "Generated calls per second.")
    var rate = 50.0

    @Option(name: .long, help: "Stop after this long (e.g. 2m); 0 runs until Ctrl-C.")
    var duration = "0"

    @Option(name: .long, help: "First of 12 consecutive loopback ports the demo uses.")
    var portsFrom = 7400

    @Option(name: .long, help: "Recent window the page and the diagnosis compare with the baseline.")
    var window = "30s"

    @Option(name: .long, help: "Probe interval.")
    var probeInterval = "1s"

    public init() {}

    public func run() async throws {
        let wan = try DurationValue.parse(self.wanDelay, field: "wan-delay")
        let svc = try DurationValue.parse(self.serviceLatency, field: "service-latency")
        let duration = try DurationValue.parse(self.duration, field: "duration")
        let window = try DurationValue.parse(self.window, field: "window")
        let probeInterval = try DurationValue.parse(self.probeInterval, field: "probe-interval")
        guard (0...1).contains(self.loss) else { throw ConfigError(field: "loss", reason: "must be between 0 and 1") }
        guard self.rate >= 0 && self.rate <= 5000 else { throw ConfigError(field: "rate", reason: "must be 0-5000") }
        guard (1024...65_000).contains(self.portsFrom) else {
            throw ConfigError(field: "ports-from", reason: "must be 1024-65000")
        }

        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        let logger = Logger(label: "insight-demo")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let topology = DemoTopology(
            portsFrom: self.portsFrom, wanDelay: wan, serviceLatency: svc, loss: self.loss, rate: self.rate,
            window: Double(window.nanoseconds) / 1e9, probeInterval: probeInterval)
        let signals = SignalWaiter(signals: [SIGTERM, SIGINT])
        let running: DemoTopology.Running
        do {
            running = try await topology.start(group: group, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let p = self.portsFrom
        say(
            """

              Insight demo: two regions on loopback
                client (traffic generator, \(Int(self.rate))/s) -> [sidecar mediary-a] -> Mediary A (stand-in)
                  -> WAN relay (\(DurationValue.format(wan)) each way) -> [sidecar mediary-b] -> Mediary B (stand-in)
                  -> [sidecar gateway-b, receiver] -> Gateway B (stand-in) -> demo service (\(DurationValue.format(svc)))

              Status page:  http://127.0.0.1:\(p)/
              Metrics:      http://127.0.0.1:\(p)/metrics  (mediary-b: :\(p + 10), gateway-b: :\(p + 11))
              Diagnosis:    insight-sidecar diagnose --admin 127.0.0.1:\(p)

              Change it while it runs (watch the matching segment move on the page):
                curl 'http://127.0.0.1:\(p)/api/v1/demo?wan_delay=80ms'
                curl 'http://127.0.0.1:\(p)/api/v1/demo?service_latency=40ms'
                or type here:  wan 80ms | svc 40ms | loss 0.01   (then Enter)

              Ctrl-C stops it.

            """)
        let control = running.control
        Thread.detachNewThread {
            while let line = readLine() {
                let parts = line.split(separator: " ").map(String.init)
                guard parts.count == 2 else {
                    if !line.isEmpty { say("commands: wan 80ms | svc 40ms | loss 0.01") }
                    continue
                }
                let key = ["wan": "wan_delay", "svc": "service_latency", "loss": "loss"][parts[0]] ?? parts[0]
                if let error = control([key: parts[1]]) { say(error) } else { say("ok: \(line)") }
            }
        }
        if duration > .zero {
            try? await Task.sleep(nanoseconds: UInt64(duration.nanoseconds))
        } else {
            _ = await signals.next()
        }
        await running.stop()
        try? await group.shutdownGracefully()
    }
}
