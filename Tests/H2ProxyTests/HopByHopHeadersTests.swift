import Testing

@testable import H2Proxy

@Suite struct HopByHopHeadersTests {
    @Test func hopByHopFieldsAreStripped() {
        var h = HeaderBlock([
            (":method", "GET"), ("connection", "keep-alive"), ("te", "trailers"), ("te", "gzip"),
            ("keep-alive", "1"), ("proxy-connection", "x"), ("transfer-encoding", "chunked"), ("upgrade", "h2c"),
            ("x-keep", "yes"),
        ])
        HopByHopHeaders.strip(&h)
        #expect(h.pairs.map(\.name) == [":method", "te", "x-keep"])
        #expect(h.first("te") == "trailers")
    }
}
