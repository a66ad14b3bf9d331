import Metrics
import NIOCore
import NIOHTTP1

/// Answers one admin connection's requests, one at a time; the decisions (when to answer, when
/// to hold a request, when the connection has idled too long) are ``StateMachine``'s.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: MetricsRegistry
    let readiness: AdminServer.Readiness
    let status: StatusSource?
    private var head: HTTPRequestHead?
    private var machine: StateMachine
    private var idleTimer: Scheduled<Void>?

    init(
        registry: MetricsRegistry, readiness: @escaping AdminServer.Readiness, status: StatusSource?,
        idleTimeout: TimeAmount
    ) {
        self.registry = registry
        self.readiness = readiness
        self.status = status
        self.machine = StateMachine(idleTimeout: idleTimeout, now: .now())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.armIdleTimer(context: context, deadline: .now() + self.machine.idleTimeout) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if self.idleTimer == nil { self.armIdleTimer(context: context, deadline: .now() + self.machine.idleTimeout) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.idleTimer?.cancel()
        self.idleTimer = nil
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.perform(self.machine.resume(writable: context.channel.isWritable), context: context)
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let action = self.machine.requestReceived(head, now: .now(), writable: context.channel.isWritable)
            self.perform(action, context: context)
        }
    }

    private func perform(_ action: StateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .answer(let head):
            self.route(context: context, head: head)
        case .resumeLater:
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.perform(handler.machine.resume(writable: context.channel.isWritable), context: context)
            }
        case .close:
            context.close(promise: nil)
        }
    }

    private func armIdleTimer(context: ChannelHandlerContext, deadline: NIODeadline) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            switch handler.machine.timerFired(now: .now()) {
            case .rearm(let next):
                handler.armIdleTimer(context: context, deadline: next)
            case .close:
                handler.idleTimer = nil
                context.close(promise: nil)
            }
        }
    }

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if let status = self.status, let route = StatusRoute(path: path) {
            let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask {
                await route.respond(status: status, method: head.method, query: query)
            }
            .whenSuccess { r in
                let (handler, context) = loopBound.value
                handler.respond(
                    context: context, head: head, status: r.status, body: r.body, contentType: r.contentType)
            }
            return
        }
        guard head.method == .GET || head.method == .HEAD else {
            self.respond(context: context, head: head, status: .methodNotAllowed, body: "GET only\n")
            return
        }
        switch path {
        case "/healthz":
            self.respond(context: context, head: head, status: .ok, body: "ok\n")
        case "/readyz":
            let readiness = self.readiness
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask { await readiness() }.whenComplete { result in
                let (handler, context) = loopBound.value
                switch result {
                case .success(let r):
                    handler.respond(
                        context: context, head: head, status: r.ready ? .ok : .serviceUnavailable,
                        body: (r.ready ? "ready: " : "not ready: ") + r.detail + "\n")
                case .failure(let error):
                    handler.respond(context: context, head: head, status: .serviceUnavailable, body: "\(error)\n")
                }
            }
        case "/metrics":
            let accept = head.headers["accept"].joined(separator: ",")
            if accept.contains("application/openmetrics-text") {
                self.respond(
                    context: context, head: head, status: .ok,
                    body: context.channel.allocator.buffer(bytes: self.registry.renderBytes(openMetrics: true)),
                    contentType: "application/openmetrics-text; version=1.0.0; charset=utf-8")
            } else {
                self.respond(
                    context: context, head: head, status: .ok,
                    body: context.channel.allocator.buffer(bytes: self.registry.renderBytes()),
                    contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
        default:
            self.respond(
                context: context, head: head, status: .notFound,
                body: "not found: try /, /healthz, /readyz, /metrics, /api/v1/hops, /api/v1/diagnose\n")
        }
    }

    private func respond(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, body: String,
        contentType: String = "text/plain; charset=utf-8"
    ) {
        self.respond(
            context: context, head: head, status: status, body: context.channel.allocator.buffer(string: body),
            contentType: contentType)
    }

    private func respond(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, body buffer: ByteBuffer,
        contentType: String
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: "\(buffer.readableBytes)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "connection", value: "close") }
        guard context.channel.isActive else { return }
        self.machine.responseStarted(now: .now())
        context.write(
            self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        if head.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if keepAlive {
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            done.whenSuccess { loopBound.value.machine.responseSent(now: .now()) }
        } else {
            done.whenComplete { _ in context.close(promise: nil) }
        }
        self.perform(self.machine.responseFlushed(writable: context.channel.isWritable), context: context)
    }
}
