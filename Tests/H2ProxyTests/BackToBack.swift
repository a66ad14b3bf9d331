import NIOCore

@testable import H2Proxy

/// A client and a server session wired to each other in memory.
final class BackToBack {
    let client: H2Session
    let server: H2Session
    var clientEvents: [H2Event] = []
    var serverEvents: [H2Event] = []
    /// When false, bytes written by the client are held (a stalled link).
    var deliverToServer = true
    var deliverToClient = true
    private var heldForServer: [ByteBuffer] = []
    private var heldForClient: [ByteBuffer] = []

    /// `memory`: one pool both sessions allocate from, as on one event loop (each its own if nil).
    init(
        clientSettings: H2Session.Settings = .init(), serverSettings: H2Session.Settings = .init(),
        memory: H2MemoryPool? = nil
    ) {
        self.client = H2Session(role: .client, settings: clientSettings, memory: memory)
        self.server = H2Session(role: .server, settings: serverSettings, memory: memory)
    }

    /// Moves bytes both ways until neither side has anything to write.
    func pump(maxRounds: Int = 1000) throws {
        for _ in 0..<maxRounds {
            var moved = false
            try self.client.produceOutput { self.heldForServer.append($0) }
            self.client.withEvents { self.clientEvents.append($0) }
            if self.deliverToServer {
                for b in self.heldForServer {
                    moved = true
                    try self.server.receive(b)
                }
                self.heldForServer.removeAll()
            }
            self.server.withEvents { self.serverEvents.append($0) }
            try self.server.produceOutput { self.heldForClient.append($0) }
            self.server.withEvents { self.serverEvents.append($0) }
            if self.deliverToClient {
                for b in self.heldForClient {
                    moved = true
                    try self.client.receive(b)
                }
                self.heldForClient.removeAll()
            }
            self.client.withEvents { self.clientEvents.append($0) }
            if !moved { return }
        }
    }

    static func request(path: String = "/svc/Method", grpc: Bool = true) -> HeaderBlock {
        var h = HeaderBlock()
        h.append(name: ":method", value: "POST")
        h.append(name: ":scheme", value: "http")
        h.append(name: ":authority", value: "test")
        h.append(name: ":path", value: path)
        if grpc {
            h.append(name: "content-type", value: "application/grpc")
            h.append(name: "te", value: "trailers")
        }
        return h
    }

    static func bytes(_ n: Int, seed: UInt8 = 1) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: n)
        for i in 0..<n { b.writeInteger(UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed))) }
        return b
    }
}

extension Array where Element == H2Event {
    func headers(stream: Int32) -> [(HeaderBlock, HeadersKind, Bool)] {
        self.compactMap {
            if case .headers(let id, let block, let kind, let end) = $0, id == stream { return (block, kind, end) }
            return nil
        }
    }

    func data(stream: Int32) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 0)
        for case .data(let id, var chunk) in self where id == stream { out.writeBuffer(&chunk) }
        return out
    }

    func closed(stream: Int32) -> UInt32? {
        for case .streamClosed(let id, let code) in self where id == stream { return code }
        return nil
    }

    func endedStream(_ stream: Int32) -> Bool {
        self.contains {
            if case .endStream(let id) = $0 { return id == stream }
            return false
        }
    }

    /// Streams whose request HEADERS were reported sent, in order.
    var headersSent: [Int32] {
        self.compactMap {
            if case .requestHeadersSent(let id) = $0 { return id }
            return nil
        }
    }

    func sent(stream: Int32) -> Int {
        var n = 0
        for case .dataSent(let id, let bytes) in self where id == stream { n += bytes }
        return n
    }
}
