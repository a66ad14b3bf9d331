import Foundation

/// What the admin listener needs to serve the status page and its API.
final class StatusSource: Sendable {
    let hop: String
    let region: String
    let observers: ObserverSources
    let probers: [Prober]
    let window: Double
    let demo: (@Sendable () -> DemoState)?
    let demoControl: (@Sendable ([String: String]) -> String?)?

    init(
        hop: String, region: String, observers: ObserverSources, probers: [Prober], window: Double,
        demo: (@Sendable () -> DemoState)? = nil, demoControl: (@Sendable ([String: String]) -> String?)? = nil
    ) {
        self.hop = hop
        self.region = region
        self.observers = observers
        self.probers = probers
        self.window = window
        self.demo = demo
        self.demoControl = demoControl
    }

    func hops() async -> HopsReport {
        let now = Date().timeIntervalSince1970
        let samples = await self.observers.samples(since: now - max(self.window, HopsReport.timelineSpan))
        var probes: [ProbeStatus] = []
        for p in self.probers { probes += await p.snapshot() }
        return HopsReport(
            hop: self.hop, region: self.region, samples: samples, probes: probes, now: now, window: self.window,
            demo: self.demo?())
    }

    func diagnose() async -> DiagnoseReport {
        let now = Date().timeIntervalSince1970
        let samples = await self.observers.samples(since: now - self.window - 3600)
        return DiagnoseReport(
            hop: self.hop, now: now, windowSeconds: self.window,
            paths: Diagnosis.analyze(samples: samples, now: now, window: self.window))
    }
}
