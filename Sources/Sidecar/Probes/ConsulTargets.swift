/// The union of every Consul watch's last good targets.
actor ConsulTargets {
    private var byWatch: [String: [ProbeTarget]] = [:]

    func set(_ key: String, _ targets: [ProbeTarget]) -> [ProbeTarget] {
        self.byWatch[key] = targets
        return self.byWatch.values.flatMap { $0 }
    }
}
