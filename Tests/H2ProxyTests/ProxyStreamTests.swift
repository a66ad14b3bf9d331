import Testing

@testable import H2Proxy

/// ``ProxyStream``'s own functions; its state machine has ``ProxyStreamStateMachineTests``.
@Suite struct ProxyStreamTests {
    @Test func resetCodeMapping() {
        #expect(ProxyStream.mapResetCode(H2ErrorCode.cancel) == H2ErrorCode.cancel)
        #expect(ProxyStream.mapResetCode(H2ErrorCode.refusedStream) == H2ErrorCode.refusedStream)
        #expect(ProxyStream.mapResetCode(H2ErrorCode.flowControlError) == H2ErrorCode.internalError)
        #expect(ProxyStream.mapResetCode(H2ErrorCode.enhanceYourCalm) == H2ErrorCode.enhanceYourCalm)
    }
}
