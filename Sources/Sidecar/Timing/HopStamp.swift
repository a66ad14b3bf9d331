import RawStructuredFieldValues

/// One `insight-hops` entry: a sidecar that forwarded the request, where, and when.
public struct HopStamp: Equatable, Sendable {
    public var hop: String
    public var region: String?
    /// Unix epoch microseconds at forwarding; informational (clocks are not synchronised).
    public var epochMicros: Int64?

    public init(hop: String, region: String?, epochMicros: Int64?) {
        self.hop = hop
        self.region = region
        self.epochMicros = epochMicros
    }

    init?(_ item: Item) {
        guard let hop = TimingHeaders.hopName(item) else { return nil }
        self.hop = hop
        switch item.rfc9651Parameters["region"] {
        case .token(let r), .string(let r): self.region = r
        case nil: self.region = nil
        default: return nil
        }
        switch item.rfc9651Parameters["t"] {
        // SF Integers stop at 15 digits and epoch µs has 16, so `t` travels as a String.
        case .string(let s): self.epochMicros = Int64(s)
        case .integer(let i): self.epochMicros = i
        case nil: self.epochMicros = nil
        default: return nil
        }
    }

    var item: Item {
        var p = OrderedMap<String, RFC9651BareItem>()
        if let region = self.region { p["region"] = region.isStructuredToken ? .token(region) : .string(region) }
        if let t = self.epochMicros { p["t"] = .string(String(t)) }
        return TimingHeaders.hopItem(self.hop, p)
    }
}
