import NIOCore
import Testing

@testable import H2Proxy

#if canImport(Glibc)
    import Glibc
#endif

/// What clients and logs read when a hop cannot be reached: plain words, no type dumps.
@Suite struct UpstreamFailureTests {
    @Test func socketErrorsReadAsTheirErrnoText() {
        #expect(UpstreamFailure.describe(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "connection refused")
        #expect(UpstreamFailure.describe(IOError(errnoCode: ECONNRESET, reason: "read")) == "connection reset by peer")
        #expect(UpstreamFailure.describe(IOError(errnoCode: EHOSTUNREACH, reason: "connect")) == "no route to host")
    }

    @Test func connectTimeoutNamesTheTimeout() {
        #expect(UpstreamFailure.describe(ChannelError.connectTimeout(.seconds(5))) == "no TCP connection within 5s")
        #expect(
            UpstreamFailure.describe(ChannelError.connectTimeout(.milliseconds(1500)))
                == "no TCP connection within 1500ms")
    }

    @Test func tlsFailuresSayWhatIsWrongWithTheCertificate() {
        let expired = TLSHandshakeFailure(
            reason: .certificateExpired, detail: "peer certificate: certificate has expired")
        #expect(
            UpstreamFailure.describe(expired)
                == "TLS handshake failed: the certificate has expired (peer certificate: certificate has expired)")
        for reason in TLSHandshakeFailure.Reason.allCases {
            let text = UpstreamFailure.describe(TLSHandshakeFailure(reason: reason, detail: ""))
            #expect(text.hasPrefix("TLS handshake failed: "))
            #expect(!text.contains("TLSHandshakeFailure") && !text.contains("Reason."))
        }
    }
}
