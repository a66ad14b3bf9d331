/// What one export request came to, as the exporter saw it.
enum ExportOutcome: Equatable, Sendable {
    /// A 2xx answer; `rejected` is the `partial_success.rejected_spans` of the response.
    case accepted(rejected: Int)
    /// Any other HTTP status, with the `Retry-After` field if there was one.
    case status(Int, retryAfter: String?)
    /// No answer within the request timeout.
    case timedOut
    /// No answer at all: refused, reset, DNS, TLS.
    case failed

    var isAccepted: Bool {
        if case .accepted = self { return true }
        return false
    }
}

/// The OTLP/HTTP retry rules (https://opentelemetry.io/docs/specs/otlp/#otlphttp-response):
/// only 429, 502, 503 and 504 are retried, after `Retry-After` when the collector sends one
/// (delay-seconds) and else after 1, 2, 4 s; every other error status is final (400 included).
///
/// Pure, so that the tests replay any sequence of answers. A collector that cannot be reached
/// or does not answer is not retried here: the batch is dropped and counted, and the next
/// batch is the next try (retrying would hold the queue for a collector that is down).
struct ExportRetry: Sendable, Equatable {
    /// Attempts per batch, the first included.
    var maxAttempts = 4
    /// The longest a batch may wait between its first attempt and a retry; a `Retry-After`
    /// past it drops the batch at once (`throttled`).
    var budget: Duration = .seconds(15)

    enum Verdict: Equatable {
        case exported(accepted: Int, rejected: Int)
        case retry(after: Duration)
        case drop(SpanMetrics.DropReason)
    }

    /// - Parameters:
    ///   - attempt: 1 for the first request of a batch.
    ///   - elapsed: time since the batch's first request started.
    ///   - spans: the batch's size.
    func verdict(_ outcome: ExportOutcome, attempt: Int, elapsed: Duration, spans: Int) -> Verdict {
        switch outcome {
        case .accepted(let rejected):
            let r = min(max(0, rejected), spans)
            return .exported(accepted: spans - r, rejected: r)
        case .timedOut:
            return .drop(.exportTimeout)
        case .failed:
            return .drop(.exportFailed)
        case .status(let code, let retryAfter):
            let giveUp: SpanMetrics.DropReason = code == 429 ? .throttled : .exportFailed
            switch code {
            case 429, 502, 503, 504:
                guard attempt < self.maxAttempts else { return .drop(giveUp) }
                let delay = Self.seconds(retryAfter) ?? .seconds(1 << min(attempt - 1, 10))
                guard elapsed + delay <= self.budget else { return .drop(giveUp) }
                return .retry(after: delay)
            case 400..<500:
                return .drop(.rejected)
            default:
                return .drop(.exportFailed)
            }
        }
    }

    /// `Retry-After` as delay-seconds; `nil` for an HTTP-date or anything else (then the
    /// exponential backoff applies).
    static func seconds(_ field: String?) -> Duration? {
        guard let text = field?.trimmingSpaces, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let n = Int(text)
        else { return nil }
        return .seconds(n)
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return s
    }
}
