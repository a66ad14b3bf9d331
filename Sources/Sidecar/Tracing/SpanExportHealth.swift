/// Whether span export works, so that failures are logged once when they start and once
/// when they stop, however many batches fail in between.
struct SpanExportHealth: Sendable, Equatable {
    enum State: Equatable, Sendable {
        case healthy
        case failing(SpanMetrics.DropReason)
    }

    private(set) var state = State.healthy
    /// Spans dropped since export started failing.
    private(set) var droppedWhileFailing = 0

    enum Event: Equatable {
        case exported(spans: Int)
        case dropped(SpanMetrics.DropReason, spans: Int)
    }

    enum Action: Equatable {
        case none
        /// Export started failing: log it, with the first reason.
        case logFailing(SpanMetrics.DropReason)
        /// Export works again after `dropped` spans were lost: log it.
        case logRecovered(dropped: Int)
    }

    mutating func event(_ event: Event) -> Action {
        switch (event, self.state) {
        case (.exported, .healthy):
            return .none
        case (.exported, .failing):
            let dropped = self.droppedWhileFailing
            self.state = .healthy
            self.droppedWhileFailing = 0
            return .logRecovered(dropped: dropped)
        case (.dropped(let reason, let n), .healthy):
            self.state = .failing(reason)
            self.droppedWhileFailing = n
            return .logFailing(reason)
        case (.dropped(_, let n), .failing):
            // Still failing, whatever the reason now (a hanging collector alternates between
            // timeouts and a full queue): said once already.
            self.droppedWhileFailing += n
            return .none
        }
    }
}
