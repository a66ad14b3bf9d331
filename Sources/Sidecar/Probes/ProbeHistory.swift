/// The recent results of one target.
struct ProbeHistory {
    static let size = 30
    var target: ProbeTarget
    var last: ProbeOutcome
    var results: [(ok: Bool, seconds: Double)] = []
    var total = 0

    /// The first result of a target.
    init(target: ProbeTarget, last: consuming ProbeOutcome) {
        self.target = target
        self.results = [(last.result == .success, last.seconds)]
        self.total = 1
        self.last = last
    }

    mutating func add(_ o: consuming ProbeOutcome) {
        self.total += 1
        self.results.append((o.result == .success, o.seconds))
        if self.results.count > Self.size { self.results.removeFirst(self.results.count - Self.size) }
        self.last = o
    }

    var successRatio: Double {
        self.results.isEmpty ? 0 : Double(self.results.filter(\.ok).count) / Double(self.results.count)
    }

    var p50: Double {
        Diagnosis.percentile(self.results.filter(\.ok).map(\.seconds), 0.5)
    }
}
