import Foundation
import H2Proxy
import Logging
import Metrics

/// One JSON line per ended stream, in the format documented in `Docs/operations.md` (Access log).
///
/// Off by default. The event loop that ends a stream only queues its ``Entry``: the lines are
/// formatted and written by the log's own thread, in batches (one `write(2)` per batch, so lines
/// from several event loops never interleave). The queue holds ``queueCapacity`` entries; when a
/// slow or stuck output (a full pipe, a FIFO nobody reads) lets it fill, new entries are dropped
/// and counted in `insight_access_log_dropped_total{reason="queue_full"}`, so a loop never waits
/// for the log. Lines a write error (`ENOSPC`, `EPIPE`, `EIO`) loses are counted with
/// `reason="write_error"`, and the error is logged once when it starts and once when writes
/// work again (``AccessLogWriteHealth``).
/// Fields are written in the order of ``Field``; a field without a value on this stream (no
/// response headers, no complete chain) is left out.
final class AccessLog: @unchecked Sendable {
    /// Entries that may wait for the writer thread (about 250 bytes each while waiting, so at
    /// most ~2 MiB); `Docs/operations.md` gives this number.
    static let queueCapacity = 8192

    let fd: Int32
    let hop: String
    /// As configured (`access_log`), for the log messages.
    let path: String
    /// Guards ``queue`` and ``stopping``; the writer waits on it when the queue is empty.
    private let condition = NSCondition()
    private var queue: AccessLogQueue<Entry>
    private var stopping = false
    private var writerDone = false
    /// `insight_access_log_dropped_total{reason="queue_full"}`; nil in unit tests without a registry.
    private let droppedCounter: Counter?
    /// `insight_access_log_dropped_total{reason="write_error"}`; nil without a registry.
    private let writeErrorCounter: Counter?
    /// Lines lost to write errors since start; written by the writer thread under ``condition``.
    private var lostToWriteErrors: UInt64 = 0
    private let logger: Logger?

    /// The fields of a line, in the order they are written.
    ///
    /// `DocsTests` checks this list against the table in `Docs/operations.md`: a new field needs a
    /// case here, a value in ``line(_:)`` (the switch is exhaustive) and a row in the docs.
    enum Field: String, CaseIterable {
        /// When the stream ended: RFC 3339, UTC, milliseconds (`2025-01-02T03:04:05.678Z`).
        case time
        case hop
        case source
        case service
        case method
        /// The request's `:method` (`POST` for gRPC).
        case httpMethod = "http_method"
        /// The `code` metric label: gRPC status name, HTTP status, or `reset`.
        case code
        /// How the stream ended, one of ``End``.
        case end
        /// For `end` = `client_reset` / `upstream_reset`: the HTTP/2 error code name.
        case resetCode = "reset_code"
        /// The correlation id (`protocol.md`): the same value as the exemplars' `trace_id`.
        case traceID = "trace_id"
        /// This sidecar's `insight-timing` entry, milliseconds with 3 decimals.
        case durMs = "dur_ms"
        case ttfbMs = "ttfb_ms"
        case selfMs = "self_ms"
        /// The per-hop segments of a complete chain: `[{"segment", "next", "ms"}]`.
        case segments
        /// For `end` = `upstream_unavailable`: the cause this sidecar answered the client with.
        case message
    }

    /// The stable words of the `end` field, one per ``StreamEndReason``.
    enum End: String, CaseIterable {
        case completed
        case clientReset = "client_reset"
        case upstreamReset = "upstream_reset"
        case upstreamUnavailable = "upstream_unavailable"
        case requestTooLarge = "request_too_large"

        init(_ reason: StreamEndReason) {
            switch reason {
            case .completed: self = .completed
            case .downstreamReset: self = .clientReset
            case .upstreamReset: self = .upstreamReset
            case .upstreamUnavailable: self = .upstreamUnavailable
            case .requestTooLarge: self = .requestTooLarge
            }
        }
    }

    /// What one line says; built from a ``HopTimingObserver`` when its stream ends.
    struct Entry {
        /// Wall clock at the end of the stream, Unix epoch microseconds.
        var epochMicros: Int64
        var hop: String
        var source: String
        var service: String
        var method: String
        var httpMethod: String
        var code: String
        var reason: StreamEndReason
        var traceID: String
        /// Milliseconds, from this sidecar's `insight-timing` entry.
        var dur: Double?
        var ttfb: Double?
        var selfTime: Double?
        var segments: [TimingChain.Segment]
    }

    /// Opens `path` (`stdout`, `-`, `stderr` or a file, appended to) and starts the writer
    /// thread; `registry` gets `insight_access_log_dropped_total{hop,reason}`, `logger` the
    /// warning when writes start failing and the notice when they work again.
    init(
        path: String, hop: String, registry: MetricsRegistry?, logger: Logger? = nil,
        capacity: Int = AccessLog.queueCapacity
    ) throws(ConfigError) {
        self.hop = hop
        self.path = path
        self.logger = logger
        self.queue = AccessLogQueue(capacity: capacity)
        let help =
            "Access log lines not written: queue_full (the queue to the log's writer thread was full), "
            + "write_error (write(2) to the output failed)."
        self.droppedCounter = registry?.counter(
            "insight_access_log_dropped_total", help: help, labels: [("hop", hop), ("reason", "queue_full")])
        self.writeErrorCounter = registry?.counter(
            "insight_access_log_dropped_total", help: help, labels: [("hop", hop), ("reason", "write_error")])
        if path == "stdout" || path == "-" {
            self.fd = STDOUT_FILENO
        } else if path == "stderr" {
            self.fd = STDERR_FILENO
        } else {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw ConfigError(
                    field: "access_log", reason: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            self.fd = fd
        }
        let thread = Thread { [self] in self.runWriter() }
        thread.name = "insight-access-log"
        thread.start()
    }

    /// Queues the line of `o`'s stream; called on the stream's event loop, never blocks.
    func write(_ o: HopTimingObserver, reason: StreamEndReason) {
        let s = o.summary
        self.enqueue(
            Entry(
                epochMicros: s.endedUnixMicros, hop: self.hop, source: o.sourceLabel,
                service: o.route.service, method: o.route.method, httpMethod: s.method, code: s.code, reason: reason,
                traceID: o.correlationID ?? "", dur: s.dur, ttfb: s.ttfb, selfTime: s.selfTime, segments: s.segments))
    }

    /// Hands `entry` to the writer thread, or drops and counts it when the queue is full.
    /// Returns false when it was dropped.
    @discardableResult
    func enqueue(_ entry: Entry) -> Bool {
        self.condition.lock()
        let offer = self.stopping ? .dropped : self.queue.offer(entry)
        if case .queued(wakeWriter: true) = offer { self.condition.signal() }
        self.condition.unlock()
        guard offer != .dropped else {
            self.droppedCounter?.increment()
            return false
        }
        return true
    }

    /// Entries dropped because the queue was full, since start (the `queue_full` counter's
    /// value, also without a registry).
    var dropped: UInt64 { self.condition.withLock { self.queue.dropped } }

    /// Lines lost to write errors since start (the `write_error` counter's value).
    var lostToWriteError: UInt64 { self.condition.withLock { self.lostToWriteErrors } }

    /// Writes what is queued and ends the writer thread; waits at most `timeout` (an output that
    /// does not drain, such as a full pipe, must not hold the shutdown). Returns whether the
    /// writer finished in time. Entries offered after this are dropped.
    @discardableResult
    func stop(timeout: Duration = .seconds(2)) -> Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        self.stopping = true
        self.condition.broadcast()
        let deadline = Date().addingTimeInterval(
            Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        while !self.writerDone {
            guard self.condition.wait(until: deadline) else { return self.writerDone }
        }
        return true
    }

    /// The writer thread: takes every waiting entry, formats them into one buffer, writes it.
    private func runWriter() {
        // The queue is only touched under the lock, even to read its capacity (ThreadSanitizer).
        let capacity = self.condition.withLock { self.queue.capacity }
        // A reader that goes away (a closed FIFO or pipe) makes write(2) fail with EPIPE here
        // instead of killing the process with SIGPIPE.
        var block = sigset_t()
        sigemptyset(&block)
        sigaddset(&block, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &block, nil)
        var batch: [Entry] = []
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64 * 1024)
        var lineEnds: [Int] = []
        var health = AccessLogWriteHealth()
        // A failed write cut a line in the middle: the next batch starts with a newline, so
        // that the torn line does not run into the next one.
        var torn = false
        while true {
            self.condition.lock()
            while true {
                self.queue.take(swappingWith: &batch)
                if !batch.isEmpty || self.stopping { break }
                if self.queue.writerWaits() { self.condition.wait() }
            }
            let last = self.stopping && batch.isEmpty
            if last {
                self.writerDone = true
                self.condition.broadcast()
            }
            self.condition.unlock()
            if last { return }
            bytes.removeAll(keepingCapacity: true)
            lineEnds.removeAll(keepingCapacity: true)
            if torn { bytes.append(UInt8(ascii: "\n")) }
            let start = bytes.count
            for entry in batch {
                Self.append(entry, to: &bytes)
                bytes.append(UInt8(ascii: "\n"))
                lineEnds.append(bytes.count)
            }
            let (written, error) = Self.writeAll(self.fd, bytes)
            let action: AccessLogWriteHealth.Action
            if let error {
                let lost = AccessLogWriteHealth.linesLost(lineEnds: lineEnds, written: written)
                if written > 0 { torn = written != start && !lineEnds.contains(written) }
                self.condition.withLock { self.lostToWriteErrors += UInt64(lost) }
                self.writeErrorCounter?.increment(by: UInt64(lost))
                action = health.event(.failed(errno: error, lines: lost))
            } else {
                torn = false
                action = health.event(.written)
            }
            self.log(action)
            // Let a batch gather: under load this bounds the wake-ups the loops pay for (a
            // futex wake each) to about 1,000 a second; the queue absorbs 1 ms of any rate.
            if batch.count < capacity / 2 { usleep(1000) }
        }
    }

    private func log(_ action: AccessLogWriteHealth.Action) {
        switch action {
        case .none: break
        case .logFailing(let error):
            self.logger?.warning(
                "access log write failing: lines are dropped and counted in insight_access_log_dropped_total",
                metadata: [
                    "reason": "write_error", "error": "\(String(cString: strerror(error)))", "path": "\(self.path)",
                ])
        case .logRecovered(let lost):
            self.logger?.notice("access log write recovered", metadata: ["lost": "\(lost)", "path": "\(self.path)"])
        }
    }

    /// Writes `bytes`, going on after short writes; returns how many bytes were written and,
    /// when a write failed (`EPIPE`, `ENOSPC`, `EIO`; or wrote nothing), its `errno`.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> (written: Int, errno: Int32?) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return (offset, n < 0 ? errno : EIO)
                }
            }
            return (offset, nil)
        }
    }

    /// The JSON object for `entry`, without the newline.
    static func line(_ e: Entry) -> String {
        var out: [UInt8] = []
        Self.append(e, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the JSON object for `e`, without the newline, to `out`.
    static func append(_ e: Entry, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        func key(_ f: Field) {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: f.rawValue.utf8)
            out.append(contentsOf: "\":".utf8)
        }
        func string(_ f: Field, _ v: String) {
            key(f)
            appendJSONString(v, to: &out)
        }
        func number(_ f: Field, _ v: Double?) {
            guard let v else { return }
            key(f)
            appendMilliseconds(v, to: &out)
        }
        for field in Field.allCases {
            switch field {
            case .time:
                key(field)
                out.append(UInt8(ascii: "\""))
                appendRFC3339(epochMicros: e.epochMicros, to: &out)
                out.append(UInt8(ascii: "\""))
            case .hop: string(field, e.hop)
            case .source: string(field, e.source)
            case .service: string(field, e.service)
            case .method: string(field, e.method)
            case .httpMethod: string(field, e.httpMethod)
            case .code: string(field, e.code)
            case .end: string(field, End(e.reason).rawValue)
            case .resetCode:
                switch e.reason {
                case .downstreamReset(let c), .upstreamReset(let c): string(field, h2ErrorName(c))
                default: break
                }
            case .traceID: string(field, e.traceID)
            case .durMs: number(field, e.dur)
            case .ttfbMs: number(field, e.ttfb)
            case .selfMs: number(field, e.selfTime)
            case .segments:
                guard !e.segments.isEmpty else { break }
                key(field)
                out.append(UInt8(ascii: "["))
                for (i, s) in e.segments.enumerated() {
                    out.append(contentsOf: (i == 0 ? "{\"segment\":" : ",{\"segment\":").utf8)
                    appendJSONString(s.hop, to: &out)
                    out.append(contentsOf: ",\"next\":".utf8)
                    appendJSONString(s.next, to: &out)
                    out.append(contentsOf: ",\"ms\":".utf8)
                    appendMilliseconds(s.milliseconds, to: &out)
                    out.append(UInt8(ascii: "}"))
                }
                out.append(UInt8(ascii: "]"))
            case .message:
                switch e.reason {
                case .upstreamUnavailable(let cause, _), .requestTooLarge(let cause): string(field, cause)
                default: break
                }
            }
        }
        out.append(UInt8(ascii: "}"))
    }

    /// `2025-01-02T03:04:05.678Z`: RFC 3339 in UTC with milliseconds.
    static func rfc3339(epochMicros: Int64) -> String {
        var out: [UInt8] = []
        Self.appendRFC3339(epochMicros: epochMicros, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static func appendRFC3339(epochMicros: Int64, to out: inout [UInt8]) {
        var seconds = time_t(epochMicros / 1_000_000)
        let millis = Int((epochMicros % 1_000_000) / 1000)
        var t = tm()
        gmtime_r(&seconds, &t)
        appendDigits(Int(t.tm_year) + 1900, width: 4, to: &out)
        out.append(UInt8(ascii: "-"))
        appendDigits(Int(t.tm_mon) + 1, width: 2, to: &out)
        out.append(UInt8(ascii: "-"))
        appendDigits(Int(t.tm_mday), width: 2, to: &out)
        out.append(UInt8(ascii: "T"))
        appendDigits(Int(t.tm_hour), width: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        appendDigits(Int(t.tm_min), width: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        appendDigits(Int(t.tm_sec), width: 2, to: &out)
        out.append(UInt8(ascii: "."))
        appendDigits(millis, width: 3, to: &out)
        out.append(UInt8(ascii: "Z"))
    }

    /// Milliseconds as a JSON number with exactly three decimals (microseconds), like `insight-timing`.
    static func milliseconds(_ ms: Double) -> String {
        var out: [UInt8] = []
        Self.appendMilliseconds(ms, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static func appendMilliseconds(_ ms: Double, to out: inout [UInt8]) {
        guard ms.isFinite, abs(ms) < 1e15 else {
            out.append(contentsOf: "0.000".utf8)
            return
        }
        let micros = Int64((ms * 1000).rounded())
        if micros < 0 { out.append(UInt8(ascii: "-")) }
        let m = Int(micros.magnitude)
        appendDigits(m / 1000, width: 1, to: &out)
        out.append(UInt8(ascii: "."))
        appendDigits(m % 1000, width: 3, to: &out)
    }

    /// `v` (≥ 0) in decimal, left-padded with zeros to `width` digits.
    private static func appendDigits(_ v: Int, width: Int, to out: inout [UInt8]) {
        let v = max(0, v)
        var divisor = 1
        var count = 1
        while v / divisor >= 10 {
            divisor *= 10
            count += 1
        }
        for _ in count..<max(count, width) { out.append(UInt8(ascii: "0")) }
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8((v / divisor) % 10))
            divisor /= 10
        }
    }

    /// The RFC 9113 §7 name of an HTTP/2 error code (`CANCEL`), or `0x…` for an unknown one.
    static func h2ErrorName(_ code: UInt32) -> String {
        let names = [
            "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
            "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
        ]
        return code < names.count ? names[Int(code)] : "0x" + String(code, radix: 16)
    }

    private static func appendJSONString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
            case UInt8(ascii: "\r"): out.append(contentsOf: "\\r".utf8)
            case UInt8(ascii: "\t"): out.append(contentsOf: "\\t".utf8)
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: "\\u00".utf8)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xf)])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
