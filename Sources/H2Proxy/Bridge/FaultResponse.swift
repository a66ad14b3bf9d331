import NIOCore

/// Responses the proxy writes on its own behalf when the upstream cannot answer.
enum FaultResponse {
    /// `grpc-status: 14` with a percent-encoded `grpc-message` naming the cause.
    static func grpcUnavailable(_ cause: String) -> HeaderBlock {
        var block = HeaderBlock(capacity: 128)
        block.append(name: "grpc-status", value: "14")
        block.append(name: "grpc-message", value: Self.percentEncode(cause))
        return block
    }

    /// `grpc-status: code` with a percent-encoded `grpc-message`.
    static func grpcStatus(_ code: Int, _ message: String) -> HeaderBlock {
        var block = HeaderBlock(capacity: 128)
        block.append(name: "grpc-status", value: "\(code)")
        block.append(name: "grpc-message", value: Self.percentEncode(message))
        return block
    }

    /// A Trailers-Only response carrying `status`.
    static func grpcTrailersOnly(_ status: HeaderBlock) -> HeaderBlock {
        var block = HeaderBlock(capacity: 192)
        block.append(name: ":status", value: "200")
        block.append(name: "content-type", value: "application/grpc")
        for (n, v) in status.pairs { block.append(name: n, value: v) }
        return block
    }

    /// A plain-text response with `status` (502: upstream unreachable or lost; 503: no
    /// upstream connection slot in time; 431: the request's headers too large for the upstream)
    /// and `body` plus a newline as its body.
    static func http(status: Int, body text: String) -> (headers: HeaderBlock, body: ByteBuffer) {
        var body = ByteBufferAllocator().buffer(capacity: text.utf8.count + 1)
        body.writeString("\(text)\n")
        var block = HeaderBlock(capacity: 96)
        block.append(name: ":status", value: "\(status)")
        block.append(name: "content-type", value: "text/plain; charset=utf-8")
        block.append(name: "content-length", value: "\(body.readableBytes)")
        return (block, body)
    }

    /// gRPC's `grpc-message` encoding: percent-encode bytes outside 0x20...0x7E and '%'.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%"
                let hex = String(byte, radix: 16, uppercase: true)
                out += hex.count == 1 ? "0" + hex : hex
            }
        }
        return out
    }
}
