import Foundation
import H2Proxy
import NIOCore

/// Builds a probe's request for a target and reads its outcome: no I/O.
struct ProbeRequest {
    static let healthPath = "/grpc.health.v1.Health/Check"
    static let echoPath = "/insight.probe.v1.Probe/Echo"

    var hop: String
    var region: String
    var upstream: HostPort
    var config: ProbeConfig

    /// Where probes of `target` connect: the target itself in this region, else the
    /// cross-region upstream.
    func address(for target: ProbeTarget) -> HostPort {
        target.region == self.region ? target.address : (self.config.crossRegionUpstream ?? self.upstream)
    }

    /// Where to connect and what to send.
    func make(for target: ProbeTarget, timeout: TimeAmount) -> (
        address: HostPort, headers: HeaderBlock, body: ByteBuffer
    ) {
        (self.address(for: target), self.headers(for: target, timeout: timeout), self.body(for: target))
    }

    /// The request headers of every probe of `target` (they do not change between probes, so
    /// ``Prober`` builds them once per target).
    func headers(for target: ProbeTarget, timeout: TimeAmount) -> HeaderBlock {
        let local = target.region == self.region
        let routeHeaders = local ? [] : (self.config.routeHeaders[target.region] ?? [])
        var authority = target.authority ?? target.address.description
        if let a = routeHeaders.first(where: { $0.name == ":authority" }) { authority = a.value }

        var h = HeaderBlock(capacity: 384)
        h.append(name: ":method", value: "POST")
        h.append(name: ":scheme", value: "http")
        h.append(name: ":authority", value: authority)
        h.append(name: ":path", value: target.kind == .health ? Self.healthPath : Self.echoPath)
        h.append(name: "content-type", value: "application/grpc")
        h.append(name: "te", value: "trailers")
        h.append(name: "grpc-timeout", value: GRPCTimeout.encode(nanoseconds: timeout.nanoseconds))
        h.append(name: "user-agent", value: "insight-sidecar-probe")
        h.append(name: "insight-probe", value: target.kind.rawValue)
        h.append(name: "insight-probe-target", value: String(target.name.prefix(128)))
        for pair in routeHeaders where pair.name != ":authority" {
            h.append(name: pair.name.lowercased(), value: pair.value)
        }
        return h
    }

    /// The gRPC-framed request message of a probe of `target` sent now (an echo request
    /// carries its send time).
    func body(for target: ProbeTarget) -> ByteBuffer {
        self.bodyTemplate(for: target).body()
    }

    /// What every probe of one target sends, encoded once (``ProbeShard`` keeps one per target).
    enum BodyTemplate {
        /// A health check's request: the same bytes every time.
        case fixed(ByteBuffer)
        /// An echo request without its send time.
        case echo(EchoRequest.Framed)

        /// The gRPC-framed request message of a probe sent now.
        func body() -> ByteBuffer {
            switch self {
            case .fixed(let bytes): return bytes
            case .echo(let request): return request.framed(sentUnixMicros: StreamClock.systemUnixMicros())
            }
        }
    }

    func bodyTemplate(for target: ProbeTarget) -> BodyTemplate {
        switch target.kind {
        case .health:
            return .fixed(GRPCMessageFraming.frame(HealthCheckRequest(service: target.service).encoded()))
        case .echo:
            return .echo(
                EchoRequest(
                    id: "", payload: Self.echoPayload, sentUnixMicros: 0,
                    sourceHop: self.hop, sourceRegion: self.region, target: target.name
                ).withoutSendTime)
        }
    }

    /// The payload of every echo request.
    static let echoPayload = Array("insight".utf8)
}
