import RawStructuredFieldValues

/// One `insight-timing` entry: what one sidecar measured on this stream, in milliseconds.
public struct TimingEntry: Equatable, Sendable {
    public var hop: String
    /// Response end received from upstream − request headers sent upstream.
    public var duration: Double
    /// Response headers received − request headers sent.
    public var ttfb: Double?
    /// The sidecar's own time on the stream (both directions).
    public var selfTime: Double

    public init(hop: String, duration: Double, ttfb: Double?, selfTime: Double) {
        self.hop = hop
        self.duration = duration
        self.ttfb = ttfb
        self.selfTime = selfTime
    }

    init?(_ item: Item) {
        guard let hop = TimingHeaders.hopName(item),
            let dur = TimingHeaders.number(item.rfc9651Parameters["dur"]), dur.isFinite, dur >= 0,
            let selfTime = TimingHeaders.number(item.rfc9651Parameters["self"]), selfTime.isFinite, selfTime >= 0
        else { return nil }
        let ttfb = TimingHeaders.number(item.rfc9651Parameters["ttfb"])
        if let t = ttfb, !t.isFinite || t < 0 { return nil }
        self.hop = hop
        self.duration = dur
        self.ttfb = ttfb
        self.selfTime = selfTime
    }

    /// The same entry as ``init(_:)`` of the library's reading of `item` (read from `bytes`),
    /// without building that reading.
    init?(_ item: TimingListParser.PlainItem, in bytes: UnsafeRawBufferPointer) {
        guard let hop = item.hopName(in: bytes),
            let dur = TimingListParser.PlainItem.number(item.parameter("dur", in: bytes)), dur.isFinite, dur >= 0,
            let selfTime = TimingListParser.PlainItem.number(item.parameter("self", in: bytes)), selfTime.isFinite,
            selfTime >= 0
        else { return nil }
        let ttfb = TimingListParser.PlainItem.number(item.parameter("ttfb", in: bytes))
        if let t = ttfb, !t.isFinite || t < 0 { return nil }
        self.hop = hop
        self.duration = dur
        self.ttfb = ttfb
        self.selfTime = selfTime
    }

    init(hop: String, durationNanos: Int64, ttfbNanos: Int64?, selfNanos: Int64) {
        self.hop = hop
        self.duration = Double(durationNanos / 1000) / 1000
        self.ttfb = ttfbNanos.map { Double($0 / 1000) / 1000 }
        self.selfTime = Double(selfNanos / 1000) / 1000
    }

    var item: Item {
        var p = OrderedMap<String, RFC9651BareItem>()
        p["dur"] = Self.decimal(self.duration)
        if let t = self.ttfb { p["ttfb"] = Self.decimal(t) }
        p["self"] = Self.decimal(self.selfTime)
        return TimingHeaders.hopItem(self.hop, p)
    }

    private static func decimal(_ ms: Double) -> RFC9651BareItem {
        TimingHeaders.milliseconds(fromNanoseconds: Int64((ms * 1_000_000).rounded()))
    }
}
