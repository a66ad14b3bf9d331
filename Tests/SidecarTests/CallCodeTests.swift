import Testing

@testable import Sidecar

/// ``CallCode``: the `code` label kept as a number while a stream runs.
@Suite struct CallCodeTests {
    @Test func grpcStatusesNameTheirLabel() {
        for (n, name) in GRPCStatusName.names.enumerated() {
            #expect(CallCode.grpc(n).name == name)
            #expect(CallCode.grpc(n) == CallCode.grpc(n))
        }
        #expect(CallCode.grpc(nil) == .unknown)
        #expect(CallCode.grpc(-1) == .unknown)
        #expect(CallCode.grpc(GRPCStatusName.names.count) == .unknown)
        #expect(CallCode.ok.name == "OK")
        #expect(CallCode.cancelled.name == "CANCELLED")
        #expect(CallCode.deadlineExceeded.name == "DEADLINE_EXCEEDED")
        #expect(CallCode.unavailable.name == "UNAVAILABLE")
        #expect(CallCode.resourceExhausted.name == "RESOURCE_EXHAUSTED")
        #expect(CallCode.permissionDenied.name == "PERMISSION_DENIED")
        #expect(CallCode.internal.name == "INTERNAL")
    }

    @Test func httpStatusesAreThreeDigits() {
        for status in [100, 200, 204, 302, 404, 431, 502, 503, 999] {
            #expect(CallCode.http(status)?.name == String(status))
        }
        // What nghttp2 lets through as `:status` (three digits) keeps its three digits.
        #expect(CallCode.http(0)?.name == "000")
        #expect(CallCode.http(7)?.name == "007")
        #expect(CallCode.http(99)?.name == "099")
        for status in [nil, 1000, -1, -200] { #expect(CallCode.http(status) == nil) }
        // No HTTP status is taken for a gRPC one, or the reverse (`000`–`016` included).
        for n in 0..<GRPCStatusName.names.count {
            #expect(CallCode.http(n) != CallCode.grpc(n))
            #expect(CallCode.http(n)?.name != CallCode.grpc(n).name)
        }
        #expect(CallCode.http(200) != CallCode.ok)
        #expect(CallCode.reset.name == "reset")
        #expect(CallCode.reset != CallCode.http(100))
    }

    /// gRPC's mapping of HTTP/2 reset codes, as `GRPCStatusName.forReset` gave it before.
    @Test func resetsMapAsGRPCClientsReportThem() {
        let expected: [UInt32: String] = [
            0x0: "INTERNAL", 0x1: "INTERNAL", 0x2: "INTERNAL", 0x3: "INTERNAL", 0x4: "INTERNAL", 0x5: "UNKNOWN",
            0x6: "INTERNAL", 0x7: "UNAVAILABLE", 0x8: "CANCELLED", 0x9: "INTERNAL", 0xa: "INTERNAL",
            0xb: "RESOURCE_EXHAUSTED", 0xc: "PERMISSION_DENIED", 0xd: "UNKNOWN", 0xffff: "UNKNOWN",
        ]
        for (code, name) in expected {
            #expect(CallCode.grpcForReset(code).name == name)
            #expect(GRPCStatusName.forReset(code) == name)
        }
    }
}
