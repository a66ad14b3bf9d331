import Testing

@testable import H2Proxy

@Suite struct FaultResponseTests {
    @Test func percentEncodingOfGRPCMessage() {
        #expect(FaultResponse.percentEncode("a b%c\né") == "a b%25c%0A%C3%A9")
    }
}
