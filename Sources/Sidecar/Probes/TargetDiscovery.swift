import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import Yams

/// Feeds the prober's target sets: the targets file (polled for changes, like Prometheus
/// file_sd) and Consul (blocking queries). Each runs as a task until cancelled.
enum TargetDiscovery {
    /// Parses a targets file: a list of targets with the fields of `probes.targets`.
    static func parseTargetsFile(_ text: String) throws(ConfigError) -> [ProbeTarget] {
        try YAMLLimits.check(text, field: "targets_file")
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError(field: "targets_file", reason: "not valid JSON or YAML: \(error)".replacingNewlines())
        }
        guard let node else { return [] }
        try YAMLLimits.checkDuplicateKeys(node, field: "targets_file")
        let list: Node.Sequence
        if let s = node.sequence {
            list = s
        } else if let m = node.mapping, let s = m["targets"]?.sequence {
            list = s
        } else {
            throw ConfigError(field: "targets_file", reason: "must be a list of targets (or {targets: [...]})")
        }
        var out: [ProbeTarget] = []
        var names = Set<String>()
        for (i, t) in list.enumerated() {
            let target = try ProbeTarget.load(t, field: "targets_file[\(i)]", source: "file")
            guard names.insert(target.name + "|" + target.kind.rawValue).inserted else {
                throw ConfigError(
                    field: "targets_file[\(i)].name",
                    reason: "duplicate target \(target.name) (\(target.kind.rawValue))")
            }
            out.append(target)
        }
        return out
    }

    /// The HTTP client configuration for `config`'s watches: one connection per watch at a time.
    static func consulClientConfiguration(_ config: ConsulConfig) -> HTTPClient.Configuration {
        .sidecar(connectionsPerHost: config.services.count * max(1, config.datacenters.count))
    }

    static func watchFile(path: String, every: TimeAmount, prober: Prober, metrics: ProbeMetrics, logger: Logger)
        -> Task<
            Void, Never
        >
    {
        Task {
            var lastStamp: (Date, Int)?
            var failing = false
            while !Task.isCancelled {
                let attrs = try? FileManager.default.attributesOfItem(atPath: path)
                let stamp = attrs.map { (($0[.modificationDate] as? Date) ?? .distantPast, ($0[.size] as? Int) ?? -1) }
                if stamp == nil {
                    // Missing (or not yet written): keep the last good targets, say so once.
                    if !failing {
                        metrics.discoveryError(source: "file", reason: "missing")
                        logger.error(
                            "targets file missing, keeping the previous targets", metadata: ["path": "\(path)"])
                    }
                    failing = true
                    lastStamp = nil
                    try? await Task.sleep(nanoseconds: UInt64(every.nanoseconds))
                    continue
                }
                if stamp?.0 != lastStamp?.0 || stamp?.1 != lastStamp?.1 {
                    lastStamp = stamp
                    do {
                        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                            throw ConfigError(field: "targets_file", reason: "cannot read \(path)")
                        }
                        let targets = try parseTargetsFile(text)
                        prober.setTargets(source: "file", targets)
                        logger.info(
                            "targets file loaded", metadata: ["path": "\(path)", "targets": "\(targets.count)"])
                        failing = false
                    } catch {
                        // Each rejected edit is logged: a second, different mistake is news too.
                        metrics.discoveryError(source: "file", reason: "invalid")
                        logger.error(
                            "targets file rejected, keeping the previous targets",
                            metadata: ["path": "\(path)", "error": "\(error)"])
                        failing = true
                    }
                }
                try? await Task.sleep(nanoseconds: UInt64(every.nanoseconds))
            }
        }
    }

    /// One task per (service, datacenter); results are merged and published as `consul`.
    /// Queries go through `client` (see ``consulClientConfiguration(_:)``).
    static func watchConsul(
        config: ConsulConfig, client: HTTPClient, prober: Prober, metrics: ProbeMetrics, logger: Logger
    ) -> Task<Void, Never> {
        Task {
            let dcs: [String?] = config.datacenters.isEmpty ? [nil] : config.datacenters.map { $0 }
            let merged = ConsulTargets(prober: prober)
            await withTaskGroup(of: Void.self) { tasks in
                for service in config.services {
                    for dc in dcs {
                        tasks.addTask {
                            var watch = ConsulWatch(
                                service: service, datacenter: dc, config: config, localRegion: prober.request.region,
                                knownRegions: Set(prober.request.config.routeHeaders.keys))
                            let key = "\(service.name)|\(dc ?? "")"
                            while !Task.isCancelled {
                                var headers: [(String, String)] = [("accept", "application/json")]
                                if let token = config.token { headers.append(("x-consul-token", token)) }
                                let action: ConsulWatch.Action
                                do throws(BoundedGetFailure) {
                                    let r = try await client.boundedGet(
                                        config.address, path: watch.path, headers: headers,
                                        timeout: config.wait + .seconds(10))
                                    action = watch.received(
                                        status: r.status, indexHeader: r.headers.first(name: "x-consul-index"),
                                        body: r.body)
                                } catch {
                                    action = watch.failed(reason: error.kind.rawValue, detail: error.detail)
                                }
                                // Shutting down: the query ended because of it, not a Consul failure.
                                if Task.isCancelled { break }
                                switch action {
                                case .publish(let targets, let unmapped):
                                    await merged.set(key, targets)
                                    logger.info(
                                        "consul targets updated",
                                        metadata: [
                                            "service": "\(service.name)", "dc": "\(dc ?? "-")",
                                            "targets": "\(targets.count)",
                                        ])
                                    for u in unmapped {
                                        metrics.unmappedTarget(source: "consul", datacenter: u.datacenter)
                                        logger.warning(
                                            "consul target not probed: its datacenter maps to no region",
                                            metadata: [
                                                "target": "\(u.target)", "address": "\(u.address)",
                                                "datacenter": "\(u.datacenter)",
                                                "fix": "add the datacenter to probes.consul.region_for_datacenter",
                                            ])
                                    }
                                case .unchanged:
                                    break
                                case .retry(let after, let reason, let detail, let logNow):
                                    metrics.discoveryError(source: "consul", reason: reason)
                                    if logNow {
                                        logger.warning(
                                            "consul query failed, keeping the last good targets",
                                            metadata: [
                                                "service": "\(service.name)", "dc": "\(dc ?? "-")",
                                                "consul": "\(config.address)", "reason": "\(reason)",
                                                "error": "\(detail)",
                                            ])
                                    }
                                    try? await Task.sleep(nanoseconds: UInt64(after.nanoseconds))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
