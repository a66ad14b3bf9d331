import Foundation
import H2Proxy
import Metrics
import NIOCore
import RawStructuredFieldValues

/// Takes part in the timing protocol for one stream and records its metrics.
///
/// Request: appends this hop to `insight-hops` and makes sure a correlation id travels.
/// Response: appends this hop to `insight-chain` (headers) and `insight-timing` (trailers),
/// splits the chain into segments and records everything when the stream ends. Every time it
/// reads is its loop's ``StreamClock`` (``HopTimingObserverSource/clock``).
final class HopTimingObserver: StreamObserver {
    /// Held strongly: the source holds no observer, so there is no cycle, and every read of an
    /// `unowned` reference costs an atomic retain and release (`swift_unownedRetainStrong`,
    /// 1.4 % of the sidecar's CPU under small-request load, a dozen reads per stream), and
    /// even an `unowned(unsafe)` one was copied to a retained reference for each use (measured:
    /// more retains per stream than the one it saved).
    let source: HopTimingObserverSource
    /// This loop's series of the stream's route.
    let loopRoute: LoopRoute
    let sourceIndex: Int
    let isGRPC: Bool
    let clientWantsTrailers: Bool
    /// The correlation id (see ``CorrelationID``), kept as bits: its text is written only
    /// into the request (when this hop makes it) and into an exemplar the stream's end keeps.
    private(set) var traceID: TraceID?
    private var method = ""

    private(set) var receivedAt: NIODeadline = .uptimeNanoseconds(0)
    private(set) var sentAt: NIODeadline?
    private var headersForwardedAt: NIODeadline?
    private var responseHeadersAt: NIODeadline?
    private var responseEndAt: NIODeadline?
    private var trailersSubmittedAt: NIODeadline?
    private var requestMessages = 0
    private var responseMessages = 0
    private var code = CallCode.unknown
    /// The response's `insight-timing` entries from the hops inwards of this one.
    private var innerEntries: [TimingEntry] = []
    /// Whether those entries cover every hop `insight-chain` named (then, with ``ownEntry``,
    /// they are the complete ``chain``).
    private var chainComplete = false
    /// This hop's own timing entry without its name (always ``HopTimingObserverSource/hop``),
    /// set when the response's end is forwarded: no `String` is copied per stream.
    private var ownTimes: (duration: Double, ttfb: Double?, selfTime: Double)?
    private var expectedChainLength = 0
    private(set) var failureMessage: String?
    /// This stream's span, when tracing is on and the trace sampled.
    var span: StreamSpan?
    /// The request's `grpc-timeout` in nanoseconds, counted from `receivedAt`.
    private var timeoutNanos: Int64?
    /// When the call ended on both sides (``streamEnded(_:at:)``).
    private var endedAt: NIODeadline?
    /// The same moment on the wall clock, Unix microseconds (for the access log and samples).
    private var endedUnixMicros: Int64 = 0
    /// For probes: the target the prober named (keeps probe paths to different targets apart).
    var probeTarget: String?

    var options: TimingOptions { self.source.options }
    var clock: StreamClock { self.source.clock }

    /// This hop's entry in the response's `insight-timing`, once its end was forwarded.
    var ownEntry: TimingEntry? {
        self.ownTimes.map {
            TimingEntry(hop: self.source.hop, duration: $0.duration, ttfb: $0.ttfb, selfTime: $0.selfTime)
        }
    }

    init(source: HopTimingObserverSource, route: LoopRoute, isProbe: Bool, isGRPC: Bool, clientWantsTrailers: Bool) {
        self.source = source
        self.loopRoute = route
        self.sourceIndex = isProbe ? 1 : 0
        self.isGRPC = isGRPC
        self.clientWantsTrailers = clientWantsTrailers
    }

    /// The inner hops' entries go back to the source for a later stream (observers live and
    /// go on their loop, with the stream that holds them).
    deinit {
        if self.innerEntries.capacity > 0 {
            // Moved out first, so that the source's copy is the only one (emptied in place).
            let entries = self.innerEntries
            self.innerEntries = []
            self.source.giveEntries(entries)
        }
    }

    /// Per-hop segments of the response's complete chain (empty if incomplete or not seen yet).
    var measurements: StreamMeasurements? { StreamMeasurements(segments: self.chainSegments) }

    /// The segments of the response's complete timing chain (inner hops' entries and this hop's),
    /// outermost first; empty if incomplete or not ended yet.
    var chainSegments: [TimingChain.Segment] {
        guard self.chainComplete, let own = self.ownEntry else { return [] }
        var out: [TimingChain.Segment] = []
        out.reserveCapacity(self.innerEntries.count + 1)
        TimingChain.forEachSegment(inner: self.innerEntries, outermost: own) { out.append($0) }
        return out
    }

    /// The route's shared series.
    var route: RouteMetrics { self.loopRoute.metrics }

    /// ``traceID`` as its 32 hex digits.
    var correlationID: String? { self.traceID?.hex }

    var sourceLabel: String { self.sourceIndex == 1 ? "probe" : "traffic" }

    func requestHeadersWillForward(_ headers: inout HeaderBlock, receivedAt: NIODeadline) {
        self.receivedAt = receivedAt
        if self.source.accessLog != nil { self.method = headers.first(":method") ?? "" }
        if let i = headers.firstIndex(of: "grpc-timeout") {
            self.timeoutNanos = GRPCTimeout.nanoseconds(headers.value(at: i))
        }
        var problems: [TimingHeaders.Problem] = []
        // Correlation id: traceparent's trace-id, else insight-id, else a new insight-id.
        if let tracing = self.source.tracing {
            self.traceID = tracing.begin(&headers, observer: self, receivedAt: receivedAt)
        }
        if self.traceID == nil { self.traceID = CorrelationID.findTraceID(in: headers) }
        if let id = self.traceID {
            // One `insight-id` goes upstream, and it says the correlation id (Docs/protocol.md).
            CorrelationID.align(id, in: &headers)
        } else {
            let id = self.source.makeTraceID()
            self.traceID = id
            CorrelationID.write(id, to: &headers)
        }
        if self.source.stripRequestHeaders {
            headers.removeAll { block, i in block.name(at: i).starts(with: "insight-".utf8) }
        } else {
            let epochMicros = self.source.unixMicros(at: receivedAt)
            if headers.firstIndex(of: "insight-hops") == nil {
                let name: StaticString = "insight-hops"
                self.source.own.withHops(epochMicros: epochMicros) { value in
                    headers.append(
                        name: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount),
                        value: value,
                        flags: TimingHeaders.neverIndexed)
                }
            } else if let count = TimingHeaders.withPlainList(
                "insight-hops", in: headers, scratch: &self.source.plainItems,
                { items, bytes in items.allSatisfy { $0.isHopStamp(in: bytes) } ? items.count : nil })
            {
                // The list as sidecars write it, every item valid: appended to in place.
                if count >= self.source.hopLimit {
                    problems.append(.hopLimit)
                } else {
                    self.source.own.withHops(epochMicros: epochMicros) { own in
                        TimingHeaders.appendItem(own, toLine: "insight-hops", in: &headers)
                    }
                }
            } else {
                let own = self.source.own.hops(epochMicros: epochMicros)
                let parsed = TimingHeaders.parseListKeepingText("insight-hops", in: headers, problems: &problems)
                var items = parsed?.items ?? []
                var valid = parsed?.validText
                let before = items.count
                items.removeAll { HopStamp($0) == nil }
                if items.count < before {
                    problems.append(.invalidItem)
                    valid = nil
                }
                if items.count >= self.source.hopLimit {
                    problems.append(.hopLimit)
                } else if let value = TimingHeaders.appending(own, to: valid, items: items) {
                    headers.replace(name: "insight-hops", value: value)
                }
            }
        }
        self.record(problems)
    }

    func requestHeadersSent(at: NIODeadline) {
        if self.sentAt == nil { self.sentAt = at }
    }

    func responseHeadersWillForward(_ headers: inout HeaderBlock, at: NIODeadline) {
        self.responseHeadersAt = at
        if !self.isGRPC, let status = CallCode.http(headers.integer(":status")) { self.code = status }
        self.appendChain(&headers)
        if self.source.editsServerTiming {
            self.serverTimingInHeaders(&headers, at: at)
        }
    }

    /// Only messages are counted: no clock is read per DATA chunk for this observer.
    var wantsDataTimes: Bool { false }

    func dataReceived(_ direction: StreamDirection, bytes: Int, messages: Int, at: NIODeadline) {
        guard messages > 0 else { return }
        switch direction {
        case .request: self.requestMessages += messages
        case .response: self.responseMessages += messages
        }
    }

    func trailersWillForward(_ trailers: inout HeaderBlock, trailersOnly: Bool, receivedAt: NIODeadline) {
        self.responseEndAt = receivedAt
        if trailersOnly {
            self.responseHeadersAt = receivedAt
            if !self.isGRPC, let status = CallCode.http(trailers.integer(":status")) { self.code = status }
            self.appendChain(&trailers)
        }
        if self.isGRPC {
            self.code = CallCode.grpc(trailers.integer("grpc-status"))
            if self.code != .ok, let m = trailers.first("grpc-message") {
                self.failureMessage = m.removingPercentEncoding ?? m
            }
        }
        var problems: [TimingHeaders.Problem] = []
        var items: [Item] = []
        var validText: String?
        // No arrays are made for a response without `insight-timing` (the innermost hop).
        var entries: [TimingEntry] = []
        // Whether the received list is one line as sidecars write it, every entry valid: then
        // this hop's entry is appended to its bytes (`validText` and `items` are not made).
        var appendInPlace = false
        if trailers.firstIndex(of: "insight-timing") != nil,
            let read = TimingHeaders.withPlainList(
                "insight-timing", in: trailers, scratch: &self.source.plainItems,
                { items, bytes -> [TimingEntry]? in
                    // An array kept by the source (given back when this observer goes).
                    var read = self.source.takeEntries()
                    read.reserveCapacity(items.count)
                    for item in items {
                        guard let e = TimingEntry(item, in: bytes) else {
                            self.source.giveEntries(read)
                            return nil
                        }
                        read.append(e)
                    }
                    return read
                })
        {
            entries = read
            appendInPlace = true
        } else if trailers.firstIndex(of: "insight-timing") != nil,
            let parsed = TimingHeaders.parseListKeepingText("insight-timing", in: trailers, problems: &problems)
        {
            items = parsed.items
            validText = parsed.validText
            entries.reserveCapacity(items.count)
            for item in items {
                if let e = TimingEntry(item) {
                    entries.append(e)
                } else {
                    problems.append(.invalidItem)
                    validText = nil
                }
            }
            if validText == nil { items = entries.map(\.item) }
        }
        // Hops add their entries only to calls whose client takes trailers (gRPC, `te:
        // trailers`): for the others a chain without them is expected, not an error.
        if entries.count < self.expectedChainLength && (self.isGRPC || self.clientWantsTrailers) {
            problems.append(.incompleteChain)
            self.source.metrics.chainIncomplete.increment()
        }
        let now = self.source.clock.trailersForwarded()
        self.trailersSubmittedAt = now
        let sent = self.sentAt ?? self.receivedAt
        // Milliseconds, cut to whole microseconds (as ``TimingEntry`` keeps them).
        func ms(_ nanos: Int64) -> Double { Double(nanos / 1000) / 1000 }
        let own = (
            duration: ms(nanos(from: sent, to: receivedAt)),
            ttfb: self.responseHeadersAt.map { ms(nanos(from: sent, to: $0)) },
            selfTime: ms(self.selfNanos(endReceived: receivedAt, submitted: now))
        )
        self.ownTimes = own
        self.chainComplete = entries.count >= self.expectedChainLength
        if !entries.isEmpty { self.innerEntries = entries }
        if self.source.stripResponseTiming {
            trailers.remove(name: "insight-timing")
            trailers.remove(name: "insight-chain")
        } else if self.isGRPC || self.clientWantsTrailers, let entry = self.ownEntry {
            if appendInPlace {
                self.source.own.withTiming(entry) { own in
                    TimingHeaders.appendItem(own, toLine: "insight-timing", in: &trailers)
                }
            } else if let value = TimingHeaders.appending(self.source.own.timing(entry), to: validText, items: items) {
                TimingHeaders.setPerCall("insight-timing", to: value, in: &trailers)
            }
        }
        if self.source.editsServerTiming, let entry = self.ownEntry {
            self.serverTimingAtEnd(&trailers, trailersOnly: trailersOnly, own: entry)
        }
        self.record(problems)
    }

    func streamEnded(_ reason: StreamEndReason, at: NIODeadline) {
        self.endedAt = at
        self.endedUnixMicros = self.source.unixMicros(at: at)
        switch reason {
        case .completed: break
        case .upstreamUnavailable(_, let status):
            self.code = self.isGRPC ? .unavailable : CallCode.http(status) ?? .unknown
        case .requestTooLarge: self.code = self.isGRPC ? .resourceExhausted : CallCode.http(431)!
        case .downstreamReset(let c), .upstreamReset(let c):
            if self.responseEndAt == nil { self.code = self.isGRPC ? CallCode.grpcForReset(c) : .reset }
        }
        // Cut short (no response end from the upstream, or a CANCELLED status) at or after the
        // client's deadline: what the client saw was DEADLINE_EXCEEDED. Not when the sidecar
        // itself ended the call with UNAVAILABLE: that is what the client saw then.
        var endedByProxy = false
        switch reason {
        case .upstreamUnavailable, .requestTooLarge: endedByProxy = true
        default: break
        }
        if self.isGRPC, !endedByProxy, let timeout = self.timeoutNanos,
            self.responseEndAt == nil || self.code == .cancelled,
            GRPCTimeout.reached(elapsed: nanos(from: self.receivedAt, to: at), timeout: timeout)
        {
            self.code = .deadlineExceeded
        }
        // A span ends when this hop handed the response's end to its client (its caller's span
        // can only end after that), or when the stream ended if no end was forwarded: ending
        // at the stream's close put a child's end up to 0.25 ms after its parent's.
        if self.span != nil {
            self.span?.end(self, at: self.trailersSubmittedAt ?? at)
            self.span = nil
        }
        let s = self.sourceIndex
        let source: RouteMetrics.Source = s == 1 ? .probe : .traffic
        // `self.loopRoute.…` each time, not a local copy of the reference (a retain and a release).
        self.loopRoute.countRequest(code: self.code, source: source)
        if self.requestMessages > 0 {
            self.loopRoute.messages(source, response: false).increment(
                by: UInt64(self.requestMessages), shard: self.source.shard)
        }
        if self.responseMessages > 0 {
            self.loopRoute.messages(source, response: true).increment(
                by: UInt64(self.responseMessages), shard: self.source.shard)
        }
        // Exemplars are stamped with the stream's end: no clock is read per histogram.
        let id = self.traceID
        let endedSeconds = Double(self.endedUnixMicros) / 1e6
        // Every call that ends is timed, however it ended: a call cut short by a deadline, a
        // reset or a lost connection counts until the moment it ended.
        let start = self.sentAt ?? self.receivedAt
        let end = self.responseEndAt ?? at
        let seconds = Double(max(0, nanos(from: start, to: end))) / 1e9
        let unary = self.requestMessages <= 1 && self.responseMessages <= 1
        self.loopRoute.observe(
            unary ? .upstreamDuration : .streamDuration, source, seconds, traceID: id, unixSeconds: endedSeconds)
        if let h = self.responseHeadersAt {
            self.loopRoute.observe(
                .upstreamTTFB, source, Double(nanos(from: start, to: h)) / 1e9, traceID: id, unixSeconds: endedSeconds)
        }
        if let own = self.ownTimes {
            self.source.proxyOverhead.observe(
                own.selfTime / 1000, traceID: id, unixSeconds: endedSeconds, shard: self.source.shard)
        }
        if self.chainComplete, let own = self.ownTimes {
            if self.innerEntries.isEmpty {
                // The innermost hop (no entries from inwards): one segment, to the service,
                // recorded without building a ``TimingEntry`` or a segment.
                self.source.observeSegment(
                    segment: self.source.hop, next: TimingChain.serviceNext, sourceIndex: s, own.duration / 1000,
                    traceID: id, unixSeconds: endedSeconds)
            } else if let entry = self.ownEntry {
                TimingChain.forEachSegment(inner: self.innerEntries, outermost: entry) { segment in
                    self.source.observeSegment(
                        segment: segment.hop, next: segment.next, sourceIndex: s, segment.milliseconds / 1000,
                        traceID: id, unixSeconds: endedSeconds)
                }
            }
        } else if self.responseEndAt == nil {
            // No response end, so no timing chain: the time from this hop on belongs to no
            // known next hop, and is recorded as such rather than left out of the segment SLO.
            self.source.observeSegment(
                segment: self.source.hop, next: Self.unknownNext, sourceIndex: s, seconds, traceID: id,
                unixSeconds: endedSeconds)
        }
        self.source.accessLog?.write(self, reason: reason)
        let now = endedSeconds
        // The first samples of each second are kept, failures or not, so rates stay unbiased.
        guard self.source.recent.admit(second: Int(now)) else { return }
        var failure = self.failureMessage
        switch reason {
        case .upstreamUnavailable(let cause, _), .requestTooLarge(let cause): failure = cause
        default: break
        }
        self.source.recent.add(
            StreamSample(
                time: now, service: self.route.service, method: self.route.method,
                isProbe: s == 1, target: self.probeTarget, code: self.code.name, duration: self.durationMilliseconds,
                selfTime: self.ownTimes?.selfTime,
                segments: self.chainSegments, failure: self.code == .ok ? nil : failure))
    }

    // MARK: Helpers

    private func appendChain(_ headers: inout HeaderBlock) {
        guard headers.firstIndex(of: "insight-chain") != nil else {
            if !self.source.stripResponseTiming {
                headers.append(name: "insight-chain", value: self.source.own.chainItem)
            }
            return
        }
        // The list as sidecars write it, every item a hop name: appended to in place.
        if let count = TimingHeaders.withPlainList(
            "insight-chain", in: headers, scratch: &self.source.plainItems,
            { items, _ in items.allSatisfy(\.hasHopName) ? items.count : nil })
        {
            self.expectedChainLength = count
            if self.source.stripResponseTiming {
                headers.remove(name: "insight-chain")
            } else {
                self.source.own.chainItemBytes.withUnsafeBytes { own in
                    TimingHeaders.appendItem(own, toLine: "insight-chain", in: &headers)
                }
            }
            return
        }
        var problems: [TimingHeaders.Problem] = []
        let parsed = TimingHeaders.parseListKeepingText("insight-chain", in: headers, problems: &problems)
        var items = parsed?.items ?? []
        var valid = parsed?.validText
        let before = items.count
        items.removeAll { TimingHeaders.hopName($0) == nil }
        if items.count < before { valid = nil }
        // Read even when it is stripped for the client: the hops it names are the ones whose
        // entries `insight-timing` must carry. Without it, this hop took itself for the
        // innermost one and recorded their time as its own segment to the service.
        self.expectedChainLength = items.count
        if self.source.stripResponseTiming {
            headers.remove(name: "insight-chain")
        } else if let value = TimingHeaders.appending(self.source.own.chainItem, to: valid, items: items) {
            headers.replace(name: "insight-chain", value: value)
        }
        self.record(problems)
    }

    /// Request headers received → sent, plus response end received → trailers submitted.
    private func selfNanos(endReceived: NIODeadline, submitted: NIODeadline) -> Int64 {
        let requestSide = nanos(from: self.receivedAt, to: self.sentAt ?? self.receivedAt)
        return max(0, requestSide) + max(0, nanos(from: endReceived, to: submitted))
    }

    private func record(_ problems: [TimingHeaders.Problem]) {
        for p in problems { self.source.metrics.headerError(p.rawValue)?.increment() }
    }

    /// The `next` label of the segment of a call that ended without a response end.
    static var unknownNext: String { "unknown" }

    /// This hop's `dur` in milliseconds: from its own timing entry, or for a call cut short,
    /// request headers sent until it ended. `nil` when the request headers never went upstream
    /// (`dur` starts there; the duration histograms time such a call from its arrival instead).
    var durationMilliseconds: Double? {
        if let own = self.ownTimes { return own.duration }
        guard let end = self.endedAt, let sent = self.sentAt else { return nil }
        return Double(max(0, nanos(from: sent, to: end))) / 1e6
    }

    /// This hop's `ttfb` in milliseconds: request sent → response headers, also for a call cut
    /// short after its headers came (the same moments `insight_upstream_ttfb_seconds` observes).
    /// `nil`, like ``durationMilliseconds``, when the request headers never went upstream.
    var ttfbMilliseconds: Double? {
        if let own = self.ownTimes { return own.ttfb }
        guard let headers = self.responseHeadersAt, let sent = self.sentAt else { return nil }
        return Double(max(0, nanos(from: sent, to: headers))) / 1e6
    }

    /// What this hop saw of one call, for its access log line.
    struct Summary: Equatable {
        /// This hop's `dur`, milliseconds (see ``HopTimingObserver/durationMilliseconds``).
        var dur: Double?
        /// This hop's `ttfb`, milliseconds: request sent → first byte of the response.
        var ttfb: Double?
        /// This hop's `self`, milliseconds: its own processing time.
        var selfTime: Double?
        /// Per-hop segments of the complete chain, outermost first (empty if incomplete).
        var segments: [TimingChain.Segment]
        /// gRPC status name, or the HTTP status for plain HTTP (`reset`/`502` when cut short).
        var code: String
        /// The request's `:method` (empty unless an access log is on).
        var method: String
        /// When the stream ended on the wall clock, Unix microseconds (0 before it ended).
        var endedUnixMicros: Int64
    }

    var summary: Summary {
        Summary(
            dur: self.durationMilliseconds, ttfb: self.ttfbMilliseconds, selfTime: self.ownTimes?.selfTime,
            segments: self.chainSegments, code: self.code.name, method: self.method,
            endedUnixMicros: self.endedUnixMicros)
    }
}

/// Signed nanoseconds from `a` to `b`.
func nanos(from a: NIODeadline, to b: NIODeadline) -> Int64 {
    Int64(bitPattern: b.uptimeNanoseconds &- a.uptimeNanoseconds)
}
