/// The demo's adjustable knobs, as the page shows them.
struct DemoState: Codable, Sendable {
    var wanDelayMilliseconds: Double
    var serviceLatencyMilliseconds: Double
    var loss: Double
    var rate: Double
    var note: String

    enum CodingKeys: String, CodingKey {
        case loss, rate, note
        case wanDelayMilliseconds = "wan_delay_ms"
        case serviceLatencyMilliseconds = "service_latency_ms"
    }
}
