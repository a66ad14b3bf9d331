import Metrics
import NIOCore
import Testing

@testable import Sidecar

@Suite struct ConfigWarningsAndDurationsTests {
    @Test func aSmallConnectionWindowIsWarnedAbout() {
        var c = SidecarConfig()
        #expect(c.warnings.isEmpty)
        c.limits.connectionWindowSize = 8 << 20
        #expect(c.warnings.count == 1)
        #expect(c.warnings.first?.contains("limits.connection_window_size") == true)
    }

    @Test func durationsAreDigitsAndAUnit() throws {
        #expect(try DurationValue.parse("250ms", field: "f") == .milliseconds(250))
        #expect(try DurationValue.parse("1.5s", field: "f") == .milliseconds(1500))
        #expect(try DurationValue.parse("2m", field: "f") == .seconds(120))
        #expect(try DurationValue.parse("3", field: "f") == .seconds(3))
        for bad in ["1e3s", "-1s", "inf", "nan", "s", "1..2s", ".5s", "5.s", "0x10s", ""] {
            #expect(throws: ConfigError.self, "\(bad)") { try DurationValue.parse(bad, field: "f") }
        }
        do {
            _ = try DurationValue.parse("1000000000h", field: "f")
            Issue.record("no error")
        } catch {
            #expect(error.reason.contains("ten years"))
        }
    }
}
