import Foundation
import Logging
import Metrics
import NIOCore
import NIOEmbedded
import Testing

@testable import H2Proxy

/// Test certificates made once with the `openssl` command line.
enum TestPKI {
    static let directory: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("insight-tls-unit-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = """
            set -e
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
              -days 30 -subj /CN=unit-ca
            for n in server other; do
              openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr \
                -subj /CN=localhost -addext subjectAltName=DNS:localhost
            done
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out server.pem \
              -copy_extensions copy
            openssl req -x509 -key other.key -out other.pem -days 30 -subj /CN=localhost
            """
        // Process.waitUntilExit can hang off the main thread in swift-corelibs-foundation.
        _ = system("cd '\(dir.path)' && (\(script)) >/dev/null 2>&1")
        return dir
    }()

    static func path(_ name: String) -> String { Self.directory.appendingPathComponent(name).path }
}

/// Stands for the connection handler behind a `TLSHandler`: keeps the errors it is told about.
final class ErrorSink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var errors: [String] = []

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.errors.append("\(error)")
    }
}

/// A client and a server `TLSHandler` on two `EmbeddedChannel`s, bytes moved by hand.
final class TLSPair {
    let registry = MetricsRegistry()
    let metrics: TLSMetrics
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let clientErrors = ErrorSink()
    let serverErrors = ErrorSink()

    init(clientContext: TLSContext, serverContext: TLSContext) throws {
        self.metrics = TLSMetrics(registry: self.registry)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let down = TLSEndpoint(side: .downstream, context: serverContext, metrics: self.metrics)
        let up = TLSEndpoint(side: .upstream, context: clientContext, metrics: self.metrics)
        try self.server.pipeline.syncOperations.addHandler(down.makeHandler(logger: logger))
        try self.client.pipeline.syncOperations.addHandler(up.makeHandler(logger: logger))
        try self.server.pipeline.syncOperations.addHandler(self.serverErrors)
        try self.client.pipeline.syncOperations.addHandler(self.clientErrors)
        self.server.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1), promise: nil)
        self.client.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 2), promise: nil)
    }

    /// Closing the channels breaks the channel–pipeline–handler cycle, so that the handlers and
    /// their OpenSSL objects are freed (LeakSanitizer checks this in `make sanitize`).
    deinit {
        _ = try? self.client.finish(acceptAlreadyClosed: true)
        _ = try? self.server.finish(acceptAlreadyClosed: true)
    }

    /// Moves bytes both ways until neither side writes.
    func pump() throws {
        var moved = true
        while moved {
            moved = false
            while let b = try self.client.readOutbound(as: ByteBuffer.self) {
                moved = true
                if self.server.isActive { try self.server.writeInbound(b) }
            }
            while let b = try self.server.readOutbound(as: ByteBuffer.self) {
                moved = true
                if self.client.isActive { try self.client.writeInbound(b) }
            }
        }
    }

    func readAll(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while let b = try channel.readInbound(as: ByteBuffer.self) { out += b.readableBytesView }
        return out
    }

    func errors(_ side: String, _ reason: String) -> Bool {
        self.registry.render().contains(
            "insight_tls_handshake_errors_total{side=\"\(side)\",reason=\"\(reason)\"} 1")
    }
}

@Suite struct TLSHandlerTests {
    static func serverContext(cert: String = "server") throws -> TLSContext {
        try TLSContext.server(certificateChain: TestPKI.path("\(cert).pem"), privateKey: TestPKI.path("\(cert).key"))
    }

    static func clientContext(host: String = "localhost") throws -> TLSContext {
        try TLSContext.client(trustRoots: TestPKI.path("ca.pem"), serverName: host, verifyHost: host)
    }

    @Test func handshakeThenDataBothWays() throws {
        let pair = try TLSPair(clientContext: Self.clientContext(), serverContext: Self.serverContext())
        // Written before the handshake: buffered, then sent.
        let early = pair.client.writeAndFlush(ByteBuffer(string: "PRI * HTTP/2.0"))
        var earlyWritten = false
        early.whenSuccess { earlyWritten = true }
        try pair.pump()
        #expect(try pair.readAll(pair.server) == Array("PRI * HTTP/2.0".utf8))
        #expect(earlyWritten)
        let big = ByteBuffer(repeating: 7, count: 100_000)
        try pair.server.writeOutbound(big)
        try pair.pump()
        #expect(try pair.readAll(pair.client) == Array(repeating: 7, count: 100_000))
        #expect(pair.registry.render().contains("insight_tls_handshakes_total{side=\"downstream\"} 1"))
        #expect(pair.registry.render().contains("insight_tls_handshakes_total{side=\"upstream\"} 1"))
    }

    @Test func wrongHostIsRefused() throws {
        let pair = try TLSPair(
            clientContext: Self.clientContext(host: "example.org"), serverContext: Self.serverContext())
        try pair.pump()
        #expect(!pair.client.isActive)
        #expect(pair.errors("upstream", "hostname_mismatch"))
        #expect(pair.errors("downstream", "alert_received"))
        // The connection handler learns why (an upstream connection tells `/readyz`).
        #expect(pair.clientErrors.errors.first?.hasPrefix("TLS handshake failed (hostname_mismatch)") == true)
    }

    @Test func untrustedServerIsRefused() throws {
        let pair = try TLSPair(clientContext: Self.clientContext(), serverContext: Self.serverContext(cert: "other"))
        try pair.pump()
        #expect(pair.errors("upstream", "cert_untrusted"))
    }

    @Test func plaintextToServerIsNotTLS() throws {
        let pair = try TLSPair(clientContext: Self.clientContext(), serverContext: Self.serverContext())
        _ = try pair.client.readOutbound(as: ByteBuffer.self)  // drop the ClientHello
        try pair.server.writeInbound(ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        #expect(!pair.server.isActive)
        #expect(pair.errors("downstream", "not_tls"))
    }

    @Test func handshakeTimesOut() throws {
        let pair = try TLSPair(clientContext: Self.clientContext(), serverContext: Self.serverContext())
        pair.server.embeddedEventLoop.advanceTime(by: .seconds(11))
        #expect(!pair.server.isActive)
        #expect(pair.errors("downstream", "timeout"))
    }

    /// OpenSSL's record buffers stay while the connection is busy and are freed once it has been
    /// idle for ``TLSHandler/recordBufferIdleTime``; traffic after that still flows.
    @Test func idleConnectionFreesItsRecordBuffers() throws {
        let pair = try TLSPair(clientContext: Self.clientContext(), serverContext: Self.serverContext())
        try pair.pump()
        let handler = try pair.server.pipeline.syncOperations.handler(type: TLSHandler.self)
        let step = TLSHandler.recordBufferIdleTime.nanoseconds / 2
        // Busy: a write every half period, so every check finds activity since the last one.
        for i in 0..<6 {
            try pair.server.writeOutbound(ByteBuffer(string: "frame \(i)"))
            try pair.pump()
            pair.server.embeddedEventLoop.advanceTime(by: .nanoseconds(step))
            #expect(handler.recordBufferReleases == 0)
        }
        #expect(try pair.readAll(pair.client) == Array((0..<6).map { "frame \($0)" }.joined().utf8))
        // Idle for two periods: freed once.
        pair.server.embeddedEventLoop.advanceTime(by: TLSHandler.recordBufferIdleTime * 2)
        #expect(handler.recordBufferReleases == 1)
        pair.server.embeddedEventLoop.advanceTime(by: TLSHandler.recordBufferIdleTime * 4)
        #expect(handler.recordBufferReleases == 1)
        // Both ways after the release.
        try pair.client.writeOutbound(ByteBuffer(string: "ping"))
        try pair.server.writeOutbound(ByteBuffer(string: "pong"))
        try pair.pump()
        #expect(try pair.readAll(pair.server) == Array("ping".utf8))
        #expect(try pair.readAll(pair.client) == Array("pong".utf8))
        pair.server.embeddedEventLoop.advanceTime(by: TLSHandler.recordBufferIdleTime * 2)
        #expect(handler.recordBufferReleases == 2)
    }

    /// Each read decrypts into the storage of the last one when nothing above kept it, and into
    /// new storage when something did (the kept bytes are not overwritten).
    @Test func readsReuseThePlaintextStorageNobodyKept() throws {
        let pair = try TLSPair(clientContext: Self.clientContext(), serverContext: Self.serverContext())
        try pair.pump()
        let address = { (buffer: ByteBuffer) in buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
        func send(_ text: String) throws -> ByteBuffer {
            try pair.client.writeOutbound(ByteBuffer(string: text))
            try pair.pump()
            return try #require(try pair.server.readInbound(as: ByteBuffer.self))
        }
        let first = address(try send("first"))
        let second = try send("second")
        #expect(address(second) == first)
        let third = try send("third")
        #expect(address(third) != first)
        #expect(second == ByteBuffer(string: "second"))
        #expect(third == ByteBuffer(string: "third"))
    }

    @Test func badFilesNameTheItem() throws {
        #expect(throws: TLSConfigurationError.self) {
            try TLSContext.server(certificateChain: "/nonexistent.pem", privateKey: TestPKI.path("server.key"))
        }
        do {
            _ = try TLSContext.server(
                certificateChain: TestPKI.path("server.pem"), privateKey: TestPKI.path("other.key"))
            Issue.record("mismatched key accepted")
        } catch {
            #expect(error.item == .privateKey)
        }
    }
}
