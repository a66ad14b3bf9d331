// Fuzz target: one H2Session (the libnghttp2 wrapper) fed a random sequence of HTTP/2
// frames, as a downstream client (server role) or an upstream server (client role) could
// send them. Frame headers are well formed (length/type/flags/stream ID); types, flags,
// stream IDs and payloads come from the input, and HEADERS/CONTINUATION payloads can be
// built from HPACK representations so that decoding reaches the header callbacks. After
// each chunk the owner drains the events and reacts like the proxy does (answers requests
// with a response, DATA and trailers; consumes DATA; resets streams), then produces output.
// The session must never crash, trap or leak across iterations.
import CFuzzDriver
import Foundation
import H2Proxy
import NIOCore

private let allocator = ByteBufferAllocator()
private let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

private struct Input {
    var bytes: UnsafeBufferPointer<UInt8>
    var pos = 0
    var isEmpty: Bool { self.pos >= self.bytes.count }
    mutating func u8() -> UInt8 {
        guard self.pos < self.bytes.count else { return 0 }
        defer { self.pos += 1 }
        return self.bytes[self.pos]
    }
    mutating func u32() -> UInt32 {
        (UInt32(self.u8()) << 24) | (UInt32(self.u8()) << 16) | (UInt32(self.u8()) << 8) | UInt32(self.u8())
    }
    mutating func take(_ n: Int) -> [UInt8] {
        let k = max(0, min(n, self.bytes.count - self.pos))
        defer { self.pos += k }
        return Array(self.bytes[self.pos..<(self.pos + k)])
    }
}

private func frame(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
    let n = payload.count
    return [
        UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n),
        type, flags,
        UInt8(truncatingIfNeeded: stream >> 24) & 0x7f, UInt8(truncatingIfNeeded: stream >> 16),
        UInt8(truncatingIfNeeded: stream >> 8), UInt8(truncatingIfNeeded: stream),
    ] + payload
}

/// HPACK integer with an `n`-bit prefix.
private func hpackInt(_ value: Int, prefix n: Int, first: UInt8) -> [UInt8] {
    let max = (1 << n) - 1
    if value < max { return [first | UInt8(value)] }
    var out: [UInt8] = [first | UInt8(max)]
    var v = value - max
    while v >= 128 {
        out.append(UInt8(v & 0x7f) | 0x80)
        v >>= 7
    }
    out.append(UInt8(v))
    return out
}

private func hpackString(_ s: [UInt8]) -> [UInt8] { hpackInt(s.count, prefix: 7, first: 0) + s }

private let names: [[UInt8]] = [
    ":method", ":path", ":scheme", ":authority", ":status", "content-type", "te",
    "grpc-timeout", "grpc-status", "insight-hops", "insight-timing", "connection", "content-length",
    "x-big", "Upper", ":protocol", "host", "transfer-encoding",
].map { Array($0.utf8) }
private let values: [[UInt8]] = [
    "POST", "GET", "CONNECT", "/insight.test.v1.Test/Unary", "/", "*", "http", "https",
    "localhost", "application/grpc", "trailers", "1S", "0", "a;dur=1;self=0.5", "keep-alive", "200", "100",
    "-1", "99999999999999999999", "",
].map { Array($0.utf8) }

/// A header block fragment: a few HPACK representations chosen by the input.
private func headerBlock(_ input: inout Input) -> [UInt8] {
    var out: [UInt8] = []
    let count = Int(input.u8() % 12)
    for _ in 0..<count {
        let op = input.u8()
        switch op % 8 {
        case 0: out += hpackInt(Int(input.u8() % 70), prefix: 7, first: 0x80)  // indexed (incl. dynamic/invalid)
        case 1, 2:  // literal, new name, with/without indexing
            let prefix: UInt8 = op % 8 == 1 ? 0x40 : 0x00
            out +=
                [prefix] + hpackString(names[Int(input.u8()) % names.count])
                + hpackString(values[Int(input.u8()) % values.count])
        case 3:  // literal, indexed name (static table), raw value from the input
            out +=
                hpackInt(Int(input.u8() % 62), prefix: 6, first: 0x40) + hpackString(input.take(Int(input.u8() % 32)))
        case 4:  // dynamic table size update
            out += hpackInt(Int(input.u8()) * 64, prefix: 5, first: 0x20)
        case 5:  // large value (header list size limits), repeated reference next
            out +=
                [0x40] + hpackString(Array("x-big".utf8)) + hpackInt(Int(input.u8()) * 256, prefix: 7, first: 0)
                + [UInt8](repeating: 0x61, count: Int(input.u8()) * 256)
        case 6: out += hpackInt(62 + Int(input.u8() % 4), prefix: 7, first: 0x80)  // dynamic table refs
        default: out += input.take(Int(input.u8() % 16))  // raw bytes
        }
    }
    return out
}

private func payload(type: UInt8, _ input: inout Input) -> [UInt8] {
    let structured = input.u8()
    if structured & 0x80 == 0 { return input.take(Int(structured)) }
    switch type {
    case 0x1, 0x9:  // HEADERS, CONTINUATION
        return headerBlock(&input)
    case 0x4:  // SETTINGS: id/value pairs
        var out: [UInt8] = []
        for _ in 0..<Int(structured % 4) {
            let id = UInt16(input.u8() % 10)
            let v = input.u32()
            out += [
                UInt8(id >> 8), UInt8(id & 0xff), UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff),
                UInt8(v & 0xff),
            ]
        }
        return out
    case 0x8:  // WINDOW_UPDATE
        let v = input.u32()
        return [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    case 0x3, 0x7:  // RST_STREAM, GOAWAY
        let code = UInt32(input.u8() % 16)
        let head: [UInt8] = type == 0x7 ? [0, 0, 0, input.u8()] : []
        return head + [0, 0, 0, UInt8(code)]
    case 0x6: return input.take(8)  // PING
    case 0x2: return input.take(5)  // PRIORITY
    default:
        return [UInt8](repeating: input.u8(), count: Int(structured & 0x7f) * 64)
    }
}

func fuzzH2Session(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    var input = Input(bytes: UnsafeBufferPointer(start: data, count: size))
    let mode = input.u8()
    let isClient = mode & 1 != 0
    let react = mode & 2 == 0
    var settings = H2Session.Settings()
    settings.maxHeaderListSize = 1024 << Int(mode >> 5)  // 1 KiB ... 128 KiB
    settings.maxContinuations = 1 + Int((mode >> 2) & 7)
    settings.streamResetBurst = 1 + UInt64((mode >> 2) & 7)
    settings.streamResetRate = 1
    let session = H2Session(role: isClient ? .client : .server, settings: settings, allocator: allocator)

    var openedRequests: [Int32] = []
    if isClient {
        var req = HeaderBlock()
        req.append(name: ":method", value: "POST")
        req.append(name: ":scheme", value: "http")
        req.append(name: ":path", value: "/insight.test.v1.Test/Unary")
        req.append(name: ":authority", value: "fuzz")
        req.append(name: "content-type", value: "application/grpc")
        if let id = try? session.submitRequest(req, endStream: false) {
            openedRequests.append(id)
            session.sendData(streamID: id, allocator.buffer(bytes: [0, 0, 0, 0, 3, 1, 2, 3]))
            session.endStream(streamID: id, trailers: nil)
        }
    }

    var wire: [UInt8] = isClient ? [] : preface
    wire += frame(0x4, 0, 0, [])  // the peer's SETTINGS
    while !input.isEmpty && wire.count < 1 << 20 {
        let op = input.u8()
        let type: UInt8 = op < 0xf0 ? op % 10 : op  // unknown types too
        let flags = input.u8()
        let sid = input.u8()
        let stream: UInt32 = sid < 0xf8 ? UInt32(sid) : input.u32()
        wire += frame(type, flags, stream, payload(type: type, &input))
    }

    var written = 0
    func drive(_ chunk: ArraySlice<UInt8>) -> Bool {
        var failed = false
        do {
            try session.receive(allocator.buffer(bytes: chunk))
        } catch {
            failed = true
        }
        session.withEvents { event in
            guard react else { return }
            switch event {
            case .headers(let id, _, let kind, _):
                if kind == .request && !isClient {
                    var resp = HeaderBlock()
                    resp.append(name: ":status", value: "200")
                    resp.append(name: "content-type", value: "application/grpc")
                    try? session.submitResponse(streamID: id, resp, endStream: false)
                    session.sendData(streamID: id, allocator.buffer(bytes: [UInt8](repeating: 7, count: 70_000)))
                    var trailers = HeaderBlock()
                    trailers.append(name: "grpc-status", value: "0")
                    session.endStream(streamID: id, trailers: trailers)
                }
            case .data(let id, let buf):
                session.consume(streamID: id, bytes: buf.readableBytes)
                if buf.readableBytes > 1000 { session.resetStream(streamID: id, errorCode: H2ErrorCode.cancel) }
            case .goAway:
                session.submitGoAway(errorCode: H2ErrorCode.noError)
            case .headerListTooLarge(let id), .protocolError(let id, _):
                if id > 0 { session.resetStream(streamID: id, errorCode: H2ErrorCode.protocolError) }
            case .endStream, .dataSent, .streamClosed, .remoteSettings, .connectionError, .requestHeadersSent:
                break
            }
        }
        do {
            _ = try session.produceOutput { written += $0.readableBytes }
        } catch {
            failed = true
        }
        _ = session.isAlive
        _ = session.acceptsNewStreams
        _ = session.queuedDataBytes
        return !failed
    }

    // Feed in chunks whose size the mode picks: all at once, or pieces of 1..64 bytes.
    var offset = 0
    let step = mode & 0x10 != 0 ? 1 + Int(mode & 0x3f) : wire.count
    while offset < wire.count {
        let end = min(wire.count, offset + max(step, 1))
        if !drive(wire[offset..<end]) { break }
        offset = end
    }
    if session.isAlive {
        session.terminate(errorCode: H2ErrorCode.noError)
        _ = try? session.produceOutput { written += $0.readableBytes }
    }
    return 0
}

// libFuzzer's driver with this target's callback (see CFuzzDriver).
exit(runFuzzer { data, size in fuzzH2Session(data, size) })

private func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, callback)
}
