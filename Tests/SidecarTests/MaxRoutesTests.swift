import Testing

@testable import Sidecar

@Suite struct MaxRoutesTests {
    private let base = "upstream: 127.0.0.1:1\nhop: a\nregion: b\n"

    @Test(arguments: [0, 1025, 100_000])
    func outOfRangeNamesTheField(value: Int) {
        #expect {
            _ = try SidecarConfig.load(yaml: self.base + "max_routes: \(value)").validated()
        } throws: { error in
            (error as? ConfigError)?.field == "max_routes"
        }
    }

    @Test func defaultAndLimitAreAccepted() throws {
        let c = try SidecarConfig.load(yaml: self.base).validated()
        #expect(c.maxRoutes == 128)
        #expect(c.timingOptions.maxRoutes == 128)
        #expect(!c.warnings.contains { $0.hasPrefix("max_routes") })
        let big = try SidecarConfig.load(yaml: self.base + "max_routes: 1024").validated()
        #expect(big.warnings.contains { $0.hasPrefix("max_routes (1024)") && $0.contains("7.6 MB") })
    }
}
