/// The union of every Consul watch's last good targets, published to the prober.
///
/// Publishing happens inside the actor: two watches answering at once must not publish
/// their unions out of order (the older, smaller union last would drop a target until the
/// next change).
actor ConsulTargets {
    private var byWatch: [String: [ProbeTarget]] = [:]
    private let prober: Prober

    init(prober: Prober) {
        self.prober = prober
    }

    /// Replaces the targets of watch `key` and publishes the union as source `consul`.
    func set(_ key: String, _ targets: [ProbeTarget]) {
        self.byWatch[key] = targets
        // Sorted by watch key: the same union is published in the same order.
        let all = self.byWatch.keys.sorted().flatMap { self.byWatch[$0]! }
        self.prober.setTargets(source: "consul", all)
    }
}
