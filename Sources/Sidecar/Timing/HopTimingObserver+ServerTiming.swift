import H2Proxy
import NIOCore

extension HopTimingObserver {
    /// Whether this hop's `server-timing` entry goes in the trailers (gRPC, or a client that
    /// asked for trailers with `te: trailers`), the same rule as `insight-timing`.
    var serverTimingInTrailers: Bool { self.isGRPC || self.clientWantsTrailers }

    /// Response headers of a response that will have no trailers for the client: the entry's
    /// `dur` is request headers sent → response headers received (all that is known yet).
    func serverTimingInHeaders(_ headers: inout HeaderBlock, at: NIODeadline) {
        guard !self.serverTimingInTrailers || self.options.stripResponseTiming else { return }
        let entry =
            self.serverTimingInTrailers || self.options.stripResponseTiming
            ? nil
            : ServerTiming.entry(
                hop: self.options.hop, region: self.options.region,
                milliseconds: Double(max(0, nanos(from: self.sentAt ?? self.receivedAt, to: at))) / 1e6)
        ServerTiming.apply(&headers, entry: entry, strip: self.options.stripResponseTiming)
    }

    /// The response's last block (trailers, or the only HEADERS block): the entry's `dur` is
    /// this hop's `dur` in `insight-timing`.
    func serverTimingAtEnd(_ block: inout HeaderBlock, trailersOnly: Bool, own: TimingEntry) {
        guard trailersOnly || self.serverTimingInTrailers else {
            if self.options.stripResponseTiming { ServerTiming.apply(&block, entry: nil, strip: true) }
            return
        }
        let entry = ServerTiming.entry(hop: self.options.hop, region: self.options.region, milliseconds: own.duration)
        ServerTiming.apply(&block, entry: entry, strip: self.options.stripResponseTiming)
    }
}
