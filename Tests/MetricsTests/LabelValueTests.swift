import Testing

@testable import Metrics

@Suite struct LabelValueTests {
    @Test func shortValuesAreKept() {
        #expect(LabelValue.truncated("pkg.Service", to: 128) == "pkg.Service")
        let exact = String(repeating: "a", count: 128)
        #expect(LabelValue.truncated(exact[...], to: 128) == exact)
    }

    /// Two names that differ only after the cut keep two label values.
    @Test func longValuesKeepTheirIdentity() {
        let prefix = String(repeating: "S", count: 200)
        let a = LabelValue.truncated((prefix + "a")[...], to: 128)
        let b = LabelValue.truncated((prefix + "b")[...], to: 128)
        #expect(a != b)
        #expect(a.count == 128 && b.count == 128)
        #expect(a.hasPrefix(String(repeating: "S", count: 111) + "~"))
        #expect(LabelValue.truncated((prefix + "a")[...], to: 128) == a)
    }
}
