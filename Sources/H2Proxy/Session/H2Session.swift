internal import CNGHTTP2
import NIOCore

/// One HTTP/2 connection's protocol state, on libnghttp2: bytes in, events out, bytes out.
///
/// No sockets: the owner feeds received bytes to ``receive(_:)``, drains ``H2Event``s with
/// ``withEvents(_:)``, and writes what ``produceOutput(_:)`` hands it. Flow control is manual:
/// received DATA opens the window again only when the owner calls ``consume(streamID:bytes:)``,
/// i.e. once the other side of the proxy has taken the bytes. Outgoing DATA is queued as
/// `ByteBuffer` slices and written with `NGHTTP2_DATA_FLAG_NO_COPY`.
public final class H2Session {
    public enum Role: Sendable { case server, client }

    public struct Settings: Sendable {
        /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise (server role).
        public var maxConcurrentStreams: UInt32 = 100
        /// SETTINGS_INITIAL_WINDOW_SIZE we advertise: the per-stream receive buffer bound.
        public var initialWindowSize: Int32 = 1 << 20
        /// Connection-level receive window. The largest possible by default, so that stream
        /// windows bound what a peer can send and one stalled stream never blocks the others
        /// (nghttpx does the same on its backend connections).
        public var connectionWindowSize: Int32 = .max
        /// Largest decoded header list we accept (names + values + 32 per field).
        public var maxHeaderListSize: Int = 64 << 10
        /// nghttp2's RST_STREAM rate limit (CVE-2023-44487): token bucket burst and refill/s.
        public var streamResetBurst: UInt64 = 1000
        public var streamResetRate: UInt64 = 33
        /// CONTINUATION frames accepted per header block (CVE-2024-28182).
        public var maxContinuations: Int = 8
        public init() {}
    }

    public let role: Role
    public let settings: Settings
    let session: OpaquePointer

    private var pendingEvents: [H2Event] = []
    private var spareEvents: [H2Event] = []
    let outbound = StreamTable<OutboundStream>()
    /// Outbound stream records of closed streams, emptied and kept for the next streams (at
    /// most ``spareOutboundLimit``), so that opening a stream allocates neither the record nor
    /// its chunk queue.
    private var spareOutbound: [OutboundStream] = []
    static let spareOutboundLimit = 16
    /// Header blocks to decode into, given back by whoever let go of a block this session
    /// handed out in an event (``recycle(_:)``). A ``ProxyLoop`` shares one pool among all its
    /// sessions; a session made alone keeps its own, of ``spareBlockLimit`` blocks.
    let headerBlocks: HeaderBlockPool
    /// What nghttp2 allocates from. Released after `nghttp2_session_del` in `deinit` (a
    /// stored property outlives the deinitialiser's body), so nghttp2 frees into a live pool.
    let memory: H2MemoryPool
    /// Bytes of free blocks a session's own ``memory`` keeps (one not given the loop's).
    static let ownMemoryLimit = 16 << 10
    /// Blocks a session made alone keeps: 4 for a client's connection, 32 for an upstream one.
    static func spareBlockLimit(_ role: Role) -> Int { role == .server ? 4 : 32 }
    /// Blocks kept for reuse now, in this session's pool (for tests).
    var spareBlockCount: Int { self.headerBlocks.count }

    // Receive state, valid only inside `receive`.
    private var inputBuffer: ByteBuffer?
    private var inputBase: UnsafeRawPointer?
    private var inputCount = 0
    private var currentBlock: HeaderBlock?
    private var currentBlockTooLarge = false
    /// ``HeaderBlock/listSize`` of `currentBlock`, kept as fields arrive (summing the block's
    /// fields again for each new one was quadratic in the fields of a block).
    private var currentBlockListSize = 0
    /// nghttp2's description of the last error it reported, if any.
    private var errorMessage: String?
    /// Whether the last `receive` reported an invalid frame (already counted).
    private var invalidFrameInLastReceive = false
    /// GOAWAY came from the peer, or from the owner (``terminate(errorCode:)``,
    /// ``submitGoAway(errorCode:)``): the end of reading is then nobody's protocol error.
    private var goAwayReceived = false
    private var goAwayFromOwner = false
    private var terminationReported = false

    // Send state, valid only inside `produceOutput`.
    private var scratch: ByteBuffer
    private var controlStart = 0
    private var segments: [Segment] = []
    private let allocator: ByteBufferAllocator

    public private(set) var protocolErrors = 0

    /// Whether events are being handed out by ``withEvents(_:)``, or nghttp2 is inside
    /// `mem_recv`/`mem_send`: re-entering either is a bug in the owner.
    private var delivering = false
    private var insideLibrary = false

    /// While true, DATA is held back (the peer's socket is full); control frames still go out
    /// and are counted in ``controlBytesWhilePaused``.
    public private(set) var dataPaused = false
    /// Memory held by frames outside flow control (HEADERS, trailers, RST_STREAM, SETTINGS,
    /// PING, GOAWAY, WINDOW_UPDATE) written since DATA was paused: what piles up behind a peer
    /// that does not read. Counts the buffers the frames keep alive, not just their bytes.
    public private(set) var controlBytesWhilePaused = 0
    /// DATA payload bytes queued on streams and not yet written, over all streams.
    public private(set) var queuedDataBytes = 0
    /// DATA payload bytes the next ``produceOutput(_:)`` may write (at least one frame of up
    /// to 16 KiB once it is positive). The channel owner sets it per flush, so that DATA counts
    /// as written, and its window goes back to the other side of the proxy, only as fast as the
    /// socket takes it.
    public var dataBudget = Int.max
    /// Streams held back because the budget ran out; resumed by the next `produceOutput`.
    private var budgetDeferred: [Int32] = []
    /// Whether DATA is waiting only because the last ``produceOutput(_:)`` used up its budget.
    public var isHoldingDataForBudget: Bool { !self.budgetDeferred.isEmpty }

    enum Segment {
        case control(Int, Int)
        case data(ByteBuffer)
    }

    /// Memory a write queued in a channel costs besides its bytes (NIO's pending-write entry and
    /// the `ByteBuffer` in it), for ``controlBytesWhilePaused``.
    static let queuedWriteOverhead = 128

    /// A class, so that the per-frame callbacks mutate it in place: a struct copied out of the
    /// dictionary would copy its chunk queue on write.
    final class OutboundStream {
        var chunks = CircularBuffer<ByteBuffer>(initialCapacity: 4)
        var bytes = 0
        var ended = false
        var trailers: HeaderBlock?
        var deferred = false

        /// Forgets the closed stream it described, keeping the chunk queue's capacity.
        func reset() {
            self.chunks.removeAll(keepingCapacity: true)
            self.bytes = 0
            self.ended = false
            self.trailers = nil
            self.deferred = false
        }
    }

    /// A record for a stream that starts sending DATA: a spare one if there is one.
    private func makeOutbound() -> OutboundStream {
        self.spareOutbound.popLast() ?? OutboundStream()
    }

    /// `headerBlocks`: the pool to decode header blocks into and give them back to (the event
    /// loop's); `nil` for one of this session's own. `memory`: the pool nghttp2 allocates from
    /// (the event loop's); `nil` for one of this session's own.
    public init(
        role: Role, settings: Settings = Settings(), allocator: ByteBufferAllocator = ByteBufferAllocator(),
        headerBlocks: HeaderBlockPool? = nil, memory: H2MemoryPool? = nil
    ) {
        self.role = role
        self.headerBlocks = headerBlocks ?? HeaderBlockPool(limit: Self.spareBlockLimit(role))
        self.memory = memory ?? H2MemoryPool(limit: Self.ownMemoryLimit)
        self.settings = settings
        self.allocator = allocator
        self.scratch = allocator.buffer(capacity: 0)

        var callbacks: OpaquePointer?
        precondition(nghttp2_session_callbacks_new(&callbacks) == 0, "nghttp2: out of memory")
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_send_callback(callbacks, sendCallback)
        nghttp2_session_callbacks_set_send_data_callback(callbacks, sendDataCallback)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, beginHeadersCallback)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, headerCallback)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, frameRecvCallback)
        if role == .client {
            nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, frameSendCallback)
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, dataChunkCallback)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, streamCloseCallback)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, invalidFrameCallback)
        nghttp2_session_callbacks_set_data_source_read_length_callback(callbacks, readLengthCallback)
        nghttp2_session_callbacks_set_error_callback2(callbacks, errorCallback)

        var option: OpaquePointer?
        precondition(nghttp2_option_new(&option) == 0, "nghttp2: out of memory")
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_stream_reset_rate_limit(option, settings.streamResetBurst, settings.streamResetRate)
        nghttp2_option_set_max_continuations(option, settings.maxContinuations)
        nghttp2_option_set_max_send_header_block_length(option, max(settings.maxHeaderListSize * 2, 64 << 10))
        // gRPC's grammar allows a `grpc-message` ending in a space (grpc-core sends it so);
        // every other RFC 9113 field check stays on.
        nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(option, 1)
        // Closed streams stay kept (nghttp2's default, up to SETTINGS_MAX_CONCURRENT_STREAMS of
        // them per server session): with `nghttp2_option_set_no_closed_streams` a DATA or
        // HEADERS frame on a closed stream is ignored instead of a STREAM_CLOSED connection
        // error (RFC 9113 §5.1), and a client could have the sidecar decode HEADERS on a closed
        // stream without end (a hostile tester's finding).

        var raw: OpaquePointer?
        // `self` is not fully initialised yet: create the session with a nil user pointer,
        // then point it at `self` below.
        let rv: Int32
        var memory = Self.makeMemory(self.memory)
        switch role {
        case .server: rv = nghttp2_session_server_new3(&raw, callbacks, nil, option, &memory)
        case .client: rv = nghttp2_session_client_new3(&raw, callbacks, nil, option, &memory)
        }
        precondition(rv == 0 && raw != nil, "nghttp2_session_new failed: \(rv)")
        self.session = raw!
        nghttp2_session_set_user_data(self.session, Unmanaged.passUnretained(self).toOpaque())
        self.submitInitialSettings()
    }

    deinit {
        nghttp2_session_del(self.session)
    }

    private func submitInitialSettings() {
        var entries: [nghttp2_settings_entry] = [
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(self.settings.initialWindowSize)),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                value: UInt32(self.settings.maxHeaderListSize)),
        ]
        switch self.role {
        case .server:
            entries.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                    value: self.settings.maxConcurrentStreams))
        case .client:
            entries.append(
                nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        if nghttp2_submit_settings(self.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count) == 0 {
            self.settingsSent += 1
        }
        if self.settings.connectionWindowSize > 65535 {
            _ = nghttp2_session_set_local_window_size(
                self.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, self.settings.connectionWindowSize)
        }
    }

    // MARK: Reading

    /// Feeds bytes read from the connection. Throws on a connection error; the session has
    /// then queued a GOAWAY, which ``produceOutput(_:)`` still writes before the owner closes.
    public func receive(_ buffer: ByteBuffer) throws(H2Error) {
        precondition(!self.insideLibrary, "H2Session.receive called from inside an nghttp2 callback")
        self.insideLibrary = true
        defer { self.insideLibrary = false }
        let errorsBefore = self.protocolErrors
        self.inputBuffer = buffer
        let rv = buffer.withUnsafeReadableBytes { raw -> Int in
            guard let base = raw.baseAddress, raw.count > 0 else { return 0 }
            self.inputBase = base
            self.inputCount = raw.count
            return nghttp2_session_mem_recv(self.session, base.assumingMemoryBound(to: UInt8.self), raw.count)
        }
        self.inputBuffer = nil
        self.inputBase = nil
        self.inputCount = 0
        self.invalidFrameInLastReceive = self.protocolErrors != errorsBefore
        if rv < 0 {
            self.goAwayFromOwner = true
            self.protocolErrors += 1
            // Every error mem_recv returns is fatal for the connection, but nghttp2 does not
            // always queue a GOAWAY itself (e.g. too many CONTINUATION frames): make sure one
            // goes out, so the connection ends instead of lingering until the idle timeout.
            let code: UInt32
            switch Int32(rv) {
            case NGHTTP2_ERR_FLOODED.rawValue, NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue:
                code = H2ErrorCode.enhanceYourCalm
            default:
                code = H2ErrorCode.protocolError
            }
            _ = nghttp2_session_terminate_session(self.session, code)
            throw H2Error(code: Int32(rv), operation: "nghttp2_session_mem_recv")
        }
    }

    /// Hands queued events to `body`, oldest first, then forgets them.
    ///
    /// Each event is moved out of the queue before `body` sees it, so the queue holds no second
    /// reference to a header block: a handler that takes the block with
    /// ``H2Event/takeHeaderBlock()`` owns it alone and edits it without a copy. A block left
    /// in the event is kept to decode a later block into.
    ///
    /// Not re-entrant: an event handler that calls `withEvents` again on the same session traps
    /// (the outer call already delivers whatever the handler caused, in order).
    public func withEvents(_ body: (inout H2Event) throws -> Void) rethrows {
        precondition(!self.delivering, "H2Session.withEvents re-entered from an event handler")
        self.delivering = true
        defer { self.delivering = false }
        while !self.pendingEvents.isEmpty {
            swap(&self.pendingEvents, &self.spareEvents)
            defer { self.spareEvents.removeAll(keepingCapacity: true) }
            for i in self.spareEvents.indices {
                // Moved out, a payload-free placeholder in its place: the handler holds the only
                // reference to the event's block or chunk, and no retain/release pair is paid
                // per event for a copy.
                var event = self.spareEvents.withUnsafeMutableBufferPointer { events in
                    let slot = events.baseAddress! + i
                    let moved = slot.move()
                    slot.initialize(to: .remoteSettings)
                    return moved
                }
                try body(&event)
                if let block = event.takeHeaderBlock() { self.keepForReuse(block) }
            }
        }
    }

    /// Whether events wait for ``withEvents(_:)`` and it may be called now (not from inside
    /// one of its handlers, nor from inside nghttp2).
    public var canDeliverEvents: Bool { !self.pendingEvents.isEmpty && !self.delivering && !self.insideLibrary }

    /// Gives back a block this session handed out in a ``H2Event/headers(streamID:_:kind:endStream:)``
    /// event once its receiver is done with it (e.g. submitted on the other side of the proxy),
    /// to decode a later block into without allocating. Dropped if enough are kept already.
    public func recycle(_ block: consuming HeaderBlock) {
        self.keepForReuse(block)
    }

    private func keepForReuse(_ block: consuming HeaderBlock) {
        self.headerBlocks.give(block)
    }

    /// An empty block to decode a header block into: a spare one if there is one.
    private func makeBlock() -> HeaderBlock {
        self.headerBlocks.take()
    }

    /// Re-opens the receive window by `bytes` for `streamID` (and the connection) once the
    /// bytes have left the proxy on the other side.
    public func consume(streamID: Int32, bytes: Int) {
        guard bytes > 0 else { return }
        // Gives the connection window back even when the stream is already closed.
        _ = nghttp2_session_consume(self.session, streamID, bytes)
    }

    // MARK: Writing

    /// Serialises every frame nghttp2 can send now and passes the bytes to `write`, in order:
    /// control frames copied into one buffer per call, DATA payloads as the queued slices.
    /// Returns `false` once the session wants neither to read nor to write.
    @discardableResult
    public func produceOutput(_ write: (ByteBuffer) -> Void) throws(H2Error) -> Bool {
        precondition(!self.insideLibrary, "H2Session.produceOutput called from inside an nghttp2 callback")
        if !self.budgetDeferred.isEmpty && self.dataBudget > 0 && !self.dataPaused {
            for id in self.budgetDeferred {
                guard let stream = self.outbound[id], stream.deferred else { continue }
                stream.deferred = false
                _ = nghttp2_session_resume_data(self.session, id)
            }
            self.budgetDeferred.removeAll(keepingCapacity: true)
        }
        self.controlStart = 0
        self.insideLibrary = true
        let rv = nghttp2_session_send(self.session)
        self.insideLibrary = false
        self.closeControlRun()
        self.noteTermination()
        if !self.segments.isEmpty {
            var controlWrites = 0
            for segment in self.segments {
                switch segment {
                case .control(let start, let end):
                    controlWrites += 1
                    write(self.scratch.getSlice(at: start, length: end - start)!)
                case .data(let slice):
                    write(slice)
                }
            }
            if self.dataPaused && controlWrites > 0 {
                // What these frames hold until the socket drains: the whole scratch buffer they
                // are slices of (4 KiB at least, for a 13-byte RST_STREAM), and the channel's
                // bookkeeping for each write. Counting wire bytes let a client that sends
                // HEADERS and never reads pile up ~200× the limit in RST_STREAMs.
                self.controlBytesWhilePaused += self.scratch.capacity + controlWrites * Self.queuedWriteOverhead
            }
            self.segments.removeAll(keepingCapacity: true)
            self.scratch = self.allocator.buffer(capacity: 0)
        }
        if rv != 0 {
            throw H2Error(code: rv, operation: "nghttp2_session_send")
        }
        return self.isAlive
    }

    /// nghttp2 stopped reading after a GOAWAY that neither the peer nor the owner asked for: it
    /// met a connection error it handles on its own, without an invalid-frame report (DATA on a
    /// stream never opened, a frame over the size limit, bad padding, a broken HPACK block).
    /// Reported once, unless the invalid frame behind it was already reported.
    private func noteTermination() {
        guard !self.terminationReported, !self.goAwayFromOwner, !self.goAwayReceived,
            nghttp2_session_want_read(self.session) == 0
        else { return }
        self.terminationReported = true
        guard !self.invalidFrameInLastReceive else { return }
        self.protocolErrors += 1
        self.pendingEvents.append(.connectionError(self.errorMessage ?? "protocol error (nghttp2 sent GOAWAY)"))
    }

    public var isAlive: Bool {
        nghttp2_session_want_read(self.session) != 0 || nghttp2_session_want_write(self.session) != 0
    }

    public var wantsWrite: Bool { nghttp2_session_want_write(self.session) != 0 }

    /// Holds DATA back while the peer's socket is not writable, and lets it go again.
    ///
    /// Bytes are reported written (``H2Event/dataSent(streamID:bytes:)``) only when they go to
    /// the socket, so while DATA is paused the other side of the proxy gets no window back:
    /// each stream waits on its own flow control and nothing piles up here.
    public func setDataPaused(_ paused: Bool) {
        guard paused != self.dataPaused else { return }
        self.dataPaused = paused
        self.controlBytesWhilePaused = 0
        if !paused {
            for id in self.outbound.ids {
                guard let stream = self.outbound[id], stream.deferred else { continue }
                stream.deferred = false
                _ = nghttp2_session_resume_data(self.session, id)
            }
        }
    }

    private func closeControlRun() {
        let end = self.scratch.writerIndex
        if end > self.controlStart {
            self.segments.append(.control(self.controlStart, end))
        }
        self.controlStart = end
    }

    fileprivate func appendControl(_ bytes: UnsafeRawBufferPointer) {
        if self.scratch.capacity == 0 {
            self.scratch = self.allocator.buffer(capacity: max(4096, bytes.count))
            self.controlStart = 0
        }
        self.scratch.writeBytes(bytes)
    }

    /// DATA payload pieces up to this size (bytes) are copied into the output run; larger
    /// ones are written as slices of the buffers they arrived in, without a copy.
    static let copiedPayloadLimit = 1024

    /// Writes one DATA frame: header, then `length` payload bytes (copied when small, else
    /// slices of the queued chunks). Returns `false` (the session fails) if the stream does not
    /// hold that many bytes, so a frame header never goes out without its payload.
    fileprivate func sendData(streamID: Int32, frameHeader: UnsafeRawBufferPointer, length: Int, padding: Int) -> Bool {
        guard let stream = self.outbound[streamID], stream.bytes >= length else { return false }
        self.appendControl(frameHeader)
        if padding > 0 { self.scratch.writeInteger(UInt8(padding - 1)) }
        var remaining = length
        while remaining > 0, var chunk = stream.chunks.popFirst() {
            var piece: ByteBuffer
            if chunk.readableBytes > remaining {
                piece = chunk.readSlice(length: remaining)!
                stream.chunks.prepend(chunk)
                remaining = 0
            } else {
                remaining -= chunk.readableBytes
                piece = chunk
            }
            if piece.readableBytes <= Self.copiedPayloadLimit {
                // Small payloads join the frame bytes around them: one write for the run
                // instead of three through the channel pipeline (a copy of a few hundred
                // bytes costs less than a write's bookkeeping).
                self.scratch.writeBuffer(&piece)
            } else {
                self.closeControlRun()
                self.segments.append(.data(piece))
            }
        }
        stream.bytes -= length
        self.queuedDataBytes -= length
        if padding > 1 {
            self.appendControl(UnsafeRawBufferPointer(start: zeroPadding, count: padding - 1))
        }
        self.pendingEvents.append(.dataSent(streamID: streamID, bytes: length))
        return true
    }

    /// The `SETTINGS_MAX_HEADER_LIST_SIZE` the peer advertised, bytes (names + values + 32 per
    /// field, RFC 9113 §6.5.2); `UInt32.max` until it says otherwise (no limit).
    public var peerMaxHeaderListSize: Int {
        Int(nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE))
    }

    // MARK: Submitting

    /// Opens a stream with `headers` (client role). Returns its stream ID.
    public func submitRequest(_ headers: HeaderBlock, endStream: Bool) throws(H2Error) -> Int32 {
        let id: Int32
        if endStream {
            id = headers.withNV { nghttp2_submit_request(self.session, nil, $0, $1, nil, nil) }
        } else {
            var provider = nghttp2_data_provider()
            provider.read_callback = readCallback
            id = headers.withNV { nghttp2_submit_request(self.session, nil, $0, $1, &provider, nil) }
        }
        if id < 0 { throw H2Error(code: id, operation: "nghttp2_submit_request") }
        if !endStream { self.outbound[id] = self.makeOutbound() }
        return id
    }

    /// Sends the final response headers on `streamID` (server role).
    public func submitResponse(streamID: Int32, _ headers: HeaderBlock, endStream: Bool) throws(H2Error) {
        let rv: Int32
        if endStream {
            rv = headers.withNV { nghttp2_submit_response(self.session, streamID, $0, $1, nil) }
        } else {
            var provider = nghttp2_data_provider()
            provider.read_callback = readCallback
            rv = headers.withNV { nghttp2_submit_response(self.session, streamID, $0, $1, &provider) }
            if rv == 0 && self.outbound[streamID] == nil { self.outbound[streamID] = self.makeOutbound() }
        }
        if rv != 0 { throw H2Error(code: rv, operation: "nghttp2_submit_response") }
    }

    /// Sends a HEADERS frame without END_STREAM and without data provider (1xx responses).
    public func submitInterimHeaders(streamID: Int32, _ headers: HeaderBlock) throws(H2Error) {
        let rv = headers.withNV {
            nghttp2_submit_headers(self.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, nil, $0, $1, nil)
        }
        if rv < 0 { throw H2Error(code: rv, operation: "nghttp2_submit_headers") }
    }

    /// Queues DATA for `streamID`; it is written as the peer's window allows.
    public func sendData(streamID: Int32, _ buffer: ByteBuffer) {
        guard buffer.readableBytes > 0, let stream = self.outbound[streamID] else { return }
        stream.chunks.appendWaitingChunk(buffer)
        stream.bytes += buffer.readableBytes
        self.queuedDataBytes += buffer.readableBytes
        self.resumeIfDeferred(streamID: streamID, stream)
    }

    /// Ends the stream after the queued DATA, with `trailers` if any.
    public func endStream(streamID: Int32, trailers: HeaderBlock?) {
        guard let stream = self.outbound[streamID] else { return }
        stream.ended = true
        stream.trailers = trailers.flatMap { $0.isEmpty ? nil : $0 }
        self.resumeIfDeferred(streamID: streamID, stream)
    }

    /// Frees the outbound stream table's slots if no stream is open (see
    /// ``StreamTable/releaseSlotsIfEmpty()``).
    func releaseIdleStorage() {
        self.outbound.releaseSlotsIfEmpty()
    }

    /// Bytes queued on `streamID` and not yet written.
    public func queuedBytes(streamID: Int32) -> Int { self.outbound[streamID]?.bytes ?? 0 }

    private func resumeIfDeferred(streamID: Int32, _ stream: OutboundStream) {
        if stream.deferred && !self.dataPaused {
            stream.deferred = false
            _ = nghttp2_session_resume_data(self.session, streamID)
        }
    }

    public func resetStream(streamID: Int32, errorCode: UInt32) {
        _ = nghttp2_submit_rst_stream(self.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// SETTINGS frames this side sent (the initial one included) and SETTINGS ACKs the peer
    /// sent back. The peer acknowledges in order, so the SETTINGS that made ``settingsSent``
    /// equal `n` is acknowledged once ``settingsAcksReceived`` reaches `n`.
    public private(set) var settingsSent = 0
    public private(set) var settingsAcksReceived = 0

    /// Queues an empty SETTINGS frame, which the peer must acknowledge (RFC 9113 section 6.5.3):
    /// a round trip that proves the peer reads and answers, changing no setting. Unlike a PING,
    /// gRPC servers do not count it as abuse on a connection without calls.
    public func submitEmptySettings() {
        guard nghttp2_submit_settings(self.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil, 0) == 0 else { return }
        self.settingsSent += 1
    }

    /// First step of a graceful shutdown: GOAWAY with the maximum stream ID.
    public func submitShutdownNotice() {
        _ = nghttp2_submit_shutdown_notice(self.session)
    }

    /// GOAWAY naming the last stream this side processed.
    public func submitGoAway(errorCode: UInt32) {
        self.goAwayFromOwner = true
        let last = nghttp2_session_get_last_proc_stream_id(self.session)
        _ = nghttp2_submit_goaway(self.session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode, nil, 0)
    }

    /// Once every stream is done, stop reading and let the session finish writing.
    public func terminate(errorCode: UInt32) {
        self.goAwayFromOwner = true
        _ = nghttp2_session_terminate_session(self.session, errorCode)
    }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (unbounded until it says otherwise).
    public var remoteMaxConcurrentStreams: Int {
        Int(nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
    }

    /// Whether the peer's GOAWAY or ours forbids new streams.
    public var acceptsNewStreams: Bool {
        nghttp2_session_check_request_allowed(self.session) != 0
    }

    public static func errorString(_ code: Int32) -> String {
        String(cString: nghttp2_strerror(code))
    }

    // MARK: Callback bodies

    fileprivate func beginHeaders(streamID: Int32) {
        self.currentBlock = self.makeBlock()
        self.currentBlockTooLarge = false
        self.currentBlockListSize = 0
    }

    fileprivate func header(
        streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, flags: UInt8
    ) -> Int32 {
        guard !self.currentBlockTooLarge else { return 0 }
        if self.currentBlock == nil {
            self.currentBlock = self.makeBlock()
            self.currentBlockListSize = 0
        }
        let size = self.currentBlockListSize + name.count + value.count + 32
        self.currentBlockListSize = size
        if size > self.settings.maxHeaderListSize {
            self.currentBlockTooLarge = true
            self.currentBlock = nil
            self.pendingEvents.append(.headerListTooLarge(streamID: streamID))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
        }
        self.currentBlock!.append(name: name, value: value, flags: flags)
        return 0
    }

    fileprivate func frameReceived(_ frame: UnsafePointer<nghttp2_frame>) {
        let hd = frame.pointee.hd
        let endStream = (hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue)) != 0
        switch Int(hd.type) {
        case Int(NGHTTP2_HEADERS.rawValue):
            guard let block = self.currentBlock else { return }
            self.currentBlock = nil
            self.pendingEvents.append(
                .headers(streamID: hd.stream_id, block, kind: block.kind, endStream: endStream))
        case Int(NGHTTP2_DATA.rawValue):
            if endStream { self.pendingEvents.append(.endStream(streamID: hd.stream_id)) }
        case Int(NGHTTP2_GOAWAY.rawValue):
            self.goAwayReceived = true
            self.pendingEvents.append(
                .goAway(lastStreamID: frame.pointee.goaway.last_stream_id, errorCode: frame.pointee.goaway.error_code))
        case Int(NGHTTP2_SETTINGS.rawValue):
            if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 {
                self.pendingEvents.append(.remoteSettings)
            } else {
                self.settingsAcksReceived += 1
            }
        default:
            break
        }
    }

    /// nghttp2 serialised a frame (client role only): a request's HEADERS are reported as sent.
    fileprivate func frameSent(_ frame: UnsafePointer<nghttp2_frame>) {
        guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
            frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
        else { return }
        self.pendingEvents.append(.requestHeadersSent(streamID: frame.pointee.hd.stream_id))
    }

    fileprivate func dataChunk(streamID: Int32, data: UnsafeRawPointer, length: Int) {
        let slice: ByteBuffer
        if let base = self.inputBase, let input = self.inputBuffer, data >= base,
            data + length <= base + self.inputCount
        {
            slice = input.getSlice(at: input.readerIndex + (data - base), length: length)!
        } else {
            var copy = self.allocator.buffer(capacity: length)
            copy.writeBytes(UnsafeRawBufferPointer(start: data, count: length))
            slice = copy
        }
        self.pendingEvents.append(.data(streamID: streamID, slice))
    }

    fileprivate func streamClosed(streamID: Int32, errorCode: UInt32) {
        if let stream = self.outbound.removeValue(forKey: streamID) {
            self.queuedDataBytes -= stream.bytes
            if self.spareOutbound.count < Self.spareOutboundLimit && stream.chunks.capacity <= 16 {
                stream.reset()
                self.spareOutbound.append(stream)
            }
        }
        self.pendingEvents.append(.streamClosed(streamID: streamID, errorCode: errorCode))
    }

    fileprivate func libraryError(_ message: UnsafePointer<CChar>?, length: Int) {
        guard let message else { return }
        let bytes = UnsafeRawBufferPointer(start: message, count: min(length, 512))
        self.errorMessage = String(decoding: bytes, as: UTF8.self)
    }

    fileprivate func invalidFrame(streamID: Int32, code: Int32) {
        self.protocolErrors += 1
        self.pendingEvents.append(.protocolError(streamID: streamID, code: code))
    }

    fileprivate func read(
        streamID: Int32, length: Int, flags: UnsafeMutablePointer<UInt32>
    ) -> Int {
        guard let stream = self.outbound[streamID] else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        if self.dataPaused {
            stream.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        if self.dataBudget <= 0 && stream.bytes > 0 {
            stream.deferred = true
            self.budgetDeferred.append(streamID)
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        let n = min(length, stream.bytes, max(self.dataBudget, 16384))
        if n > 0 {
            flags.pointee |= NGHTTP2_DATA_FLAG_NO_COPY.rawValue
            self.dataBudget -= n
        }
        if n == stream.bytes && stream.ended {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if let trailers = stream.trailers {
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                stream.trailers = nil
                _ = trailers.withNV { nghttp2_submit_trailer(self.session, streamID, $0, $1) }
                // nghttp2 copied the fields: the block can take a later decoded block.
                self.keepForReuse(trailers)
            }
            return n
        }
        if n == 0 {
            stream.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return n
    }
}

extension HeaderBlock {
    var kind: HeadersKind {
        for i in self.fields.indices {
            if self.nameEquals(at: i, ":status") {
                return self.valueHasPrefix(at: i, "1") ? .informational : .response
            }
            if self.nameEquals(at: i, ":method") { return .request }
        }
        return .trailers
    }

    func withNV<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        self.withFields { raw, fields in
            withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(fields.count, 1)) { nvs in
                let base = UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(zeroPadding))
                let shift = self.storageBase
                for (i, f) in fields.enumerated() {
                    nvs[i] = nghttp2_nv(
                        name: (base + (Int(f.nameOffset) - shift)).assumingMemoryBound(to: UInt8.self),
                        value: (base + (Int(f.valueOffset) - shift)).assumingMemoryBound(to: UInt8.self),
                        namelen: Int(f.nameLength), valuelen: Int(f.valueLength), flags: f.flags)
                }
                return body(UnsafePointer(nvs.baseAddress!), fields.count)
            }
        }
    }
}

nonisolated(unsafe) private let zeroPadding: UnsafeMutablePointer<UInt8> = {
    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
    p.initialize(repeating: 0, count: 256)
    return p
}()

/// Calls `body` with the session behind nghttp2's `user_data` without retaining it: the session
/// outlives every callback (nghttp2 calls back only from inside the session's own calls), and a
/// retain/release pair per callback (one per header field) was 22 of the ~350 reference-count
/// operations per proxied request.
@inline(__always)
private func withOwner<Result>(_ userData: UnsafeMutableRawPointer?, _ body: (H2Session) -> Result) -> Result {
    Unmanaged<H2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
}

private let sendCallback: nghttp2_send_callback = { _, data, length, _, userData in
    withOwner(userData) { $0.appendControl(UnsafeRawBufferPointer(start: data, count: length)) }
    return length
}

private let sendDataCallback: nghttp2_send_data_callback = { _, frame, framehd, length, _, userData in
    let frame = frame!.pointee
    let sent = withOwner(userData) {
        $0.sendData(
            streamID: frame.hd.stream_id, frameHeader: UnsafeRawBufferPointer(start: framehd, count: 9),
            length: length, padding: Int(frame.data.padlen))
    }
    return sent ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
}

private let beginHeadersCallback: nghttp2_on_begin_headers_callback = { _, frame, userData in
    withOwner(userData) { $0.beginHeaders(streamID: frame!.pointee.hd.stream_id) }
    return 0
}

private let headerCallback: nghttp2_on_header_callback = { _, frame, name, namelen, value, valuelen, flags, userData in
    withOwner(userData) {
        $0.header(
            streamID: frame!.pointee.hd.stream_id,
            name: UnsafeRawBufferPointer(start: name, count: namelen),
            value: UnsafeRawBufferPointer(start: value, count: valuelen), flags: flags)
    }
}

private let frameRecvCallback: nghttp2_on_frame_recv_callback = { _, frame, userData in
    withOwner(userData) { $0.frameReceived(frame!) }
    return 0
}

private let frameSendCallback: nghttp2_on_frame_send_callback = { _, frame, userData in
    withOwner(userData) { $0.frameSent(frame!) }
    return 0
}

private let dataChunkCallback: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
    withOwner(userData) { $0.dataChunk(streamID: streamID, data: UnsafeRawPointer(data!), length: length) }
    return 0
}

private let streamCloseCallback: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
    withOwner(userData) { $0.streamClosed(streamID: streamID, errorCode: errorCode) }
    return 0
}

private let errorCallback: nghttp2_error_callback2 = { _, _, message, length, userData in
    withOwner(userData) { $0.libraryError(message, length: length) }
    return 0
}

private let invalidFrameCallback: nghttp2_on_invalid_frame_recv_callback = { _, frame, code, userData in
    withOwner(userData) { $0.invalidFrame(streamID: frame!.pointee.hd.stream_id, code: code) }
    return 0
}

private let readLengthCallback: nghttp2_data_source_read_length_callback = {
    _, _, _, sessionWindow, streamWindow, remoteMaxFrame, _ in
    max(1, min(Int(sessionWindow), Int(streamWindow), Int(remoteMaxFrame)))
}

private let readCallback: nghttp2_data_source_read_callback = { _, streamID, _, length, flags, _, userData in
    withOwner(userData) { $0.read(streamID: streamID, length: length, flags: flags!) }
}
