import Atomics
import NIOCore
import NIOPosix

/// The demo's stand-in for a WAN link: a TCP relay that holds every chunk for the configured
/// one-way delay in each direction. "Loss" is emulated as TCP would show it to the
/// application: a lost segment costs a retransmission timeout (200 ms) for that chunk and,
/// since TCP delivers in order, for everything behind it.
final class DelayRelay: Sendable {
    struct Settings: Sendable {
        let delay = ManagedAtomic<Int64>(0)
        /// Probability (per million) that a chunk is "lost" once.
        let lossPerMillion = ManagedAtomic<Int64>(0)
    }

    static let retransmissionTimeout: TimeAmount = .milliseconds(200)

    let settings: Settings
    let target: SocketAddress
    let group: EventLoopGroup

    init(group: EventLoopGroup, target: SocketAddress, settings: Settings) {
        self.group = group
        self.target = target
        self.settings = settings
    }

    func start(host: String, port: Int) async throws -> Channel {
        let settings = self.settings
        let target = self.target
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                let toTarget = Half(settings: settings)
                return inbound.pipeline.addHandler(toTarget).flatMap {
                    ClientBootstrap(group: inbound.eventLoop)
                        .channelInitializer { outbound in
                            outbound.pipeline.addHandler(Half(settings: settings, peer: inbound))
                        }
                        .connect(to: target)
                        .map { outbound in toTarget.connected(to: outbound) }
                        .flatMapError { error in
                            inbound.close(promise: nil)
                            return inbound.eventLoop.makeFailedFuture(error)
                        }
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Reads one side and delivers to the other, each chunk at arrival + delay, in order.
    final class Half: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let settings: Settings
        private var peer: Channel?
        /// Chunks (with their delivery times) read before the peer connected.
        private var pending: [(NIODeadline, ByteBuffer)] = []
        private var lastDelivery = NIODeadline.uptimeNanoseconds(0)
        private var closedBeforePeer = false

        init(settings: Settings, peer: Channel? = nil) {
            self.settings = settings
            self.peer = peer
        }

        func connected(to peer: Channel) {
            self.peer = peer
            for (at, buffer) in self.pending { self.deliver(buffer, at: at, on: peer.eventLoop) }
            self.pending.removeAll()
            if self.closedBeforePeer { peer.close(promise: nil) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = self.unwrapInboundIn(data)
            var at = NIODeadline.now() + .nanoseconds(self.settings.delay.load(ordering: .relaxed))
            let loss = self.settings.lossPerMillion.load(ordering: .relaxed)
            if loss > 0, Int64.random(in: 0..<1_000_000) < loss { at = at + DelayRelay.retransmissionTimeout }
            at = max(at, self.lastDelivery)
            self.lastDelivery = at
            if self.peer == nil {
                self.pending.append((at, buffer))
            } else {
                self.deliver(buffer, at: at, on: context.eventLoop)
            }
        }

        private func deliver(_ buffer: ByteBuffer, at: NIODeadline, on loop: EventLoop) {
            guard let peer = self.peer else { return }
            loop.scheduleTask(deadline: at) { peer.writeAndFlush(buffer, promise: nil) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            guard let peer = self.peer else {
                self.closedBeforePeer = true
                return
            }
            context.eventLoop.scheduleTask(deadline: max(.now(), self.lastDelivery)) { peer.close(promise: nil) }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}
