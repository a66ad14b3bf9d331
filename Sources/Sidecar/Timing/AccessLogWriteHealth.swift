/// Whether the access log's output takes its lines, so that write errors (`ENOSPC`, `EPIPE`,
/// `EIO`) are logged once when they start and once when they stop, however many batches fail
/// in between; and how many lines of a batch a failed or short `write(2)` cost.
struct AccessLogWriteHealth: Equatable, Sendable {
    enum State: Equatable, Sendable {
        case healthy
        /// Failing since a write failed with this `errno`.
        case failing(errno: Int32)
    }

    private(set) var state = State.healthy
    /// Lines lost to write errors since the output started failing.
    private(set) var lostWhileFailing = 0

    enum Event: Equatable {
        /// A batch was written whole.
        case written
        /// A write failed with `errno` and `lines` lines of the batch were not (completely) written.
        case failed(errno: Int32, lines: Int)
    }

    enum Action: Equatable {
        case none
        /// Writes started failing: log it, with the error.
        case logFailing(errno: Int32)
        /// A batch was written again after `lost` lines were lost: log it.
        case logRecovered(lost: Int)
    }

    mutating func event(_ event: Event) -> Action {
        switch (event, self.state) {
        case (.written, .healthy):
            return .none
        case (.written, .failing):
            let lost = self.lostWhileFailing
            self.state = .healthy
            self.lostWhileFailing = 0
            return .logRecovered(lost: lost)
        case (.failed(let errno, let lines), .healthy):
            self.state = .failing(errno: errno)
            self.lostWhileFailing = lines
            return .logFailing(errno: errno)
        case (.failed(_, let lines), .failing):
            self.lostWhileFailing += lines
            return .none
        }
    }

    /// The lines of a batch not completely written when only its first `written` bytes were:
    /// `lineEnds` holds, ascending, the offset just past each line's newline. A line cut in
    /// the middle counts as lost.
    static func linesLost(lineEnds: [Int], written: Int) -> Int {
        // The lines that ended within `written` went out whole; lineEnds is short (one batch).
        var whole = 0
        while whole < lineEnds.count && lineEnds[whole] <= written { whole += 1 }
        return lineEnds.count - whole
    }
}
