import NIOCore
import Yams

extension ProbeConfig {
    /// Reads the `probes:` mapping; every unknown key is an error naming it.
    static func load(_ node: Node, field: String) throws(ConfigError) -> ProbeConfig {
        guard let map = node.mapping else { throw ConfigError(field: field, reason: "must be a mapping") }
        var c = ProbeConfig()
        for (k, v) in map {
            let key = k.string ?? ""
            let name = "\(field).\(key)"
            switch key {
            case "interval": c.interval = try DurationValue.parse(try v.yamlText(name), field: name)
            case "timeout": c.timeout = try DurationValue.parse(try v.yamlText(name), field: name)
            case "max_concurrency": c.maxConcurrency = try v.yamlInteger(name)
            case "cross_region_upstream":
                c.crossRegionUpstream = try HostPort(parsing: try v.yamlText(name), field: name)
            case "targets_file": c.targetsFile = try v.yamlText(name)
            case "targets_file_refresh":
                c.targetsFileRefresh = try DurationValue.parse(try v.yamlText(name), field: name)
            case "route_headers":
                guard let regions = v.mapping else {
                    throw ConfigError(field: name, reason: "must map regions to headers")
                }
                for (r, headers) in regions {
                    let region = r.string ?? ""
                    guard let hm = headers.mapping else {
                        throw ConfigError(field: "\(name).\(region)", reason: "must map header names to values")
                    }
                    c.routeHeaders[region] = try hm.map { (hk, hv) throws(ConfigError) in
                        HeaderPair(
                            name: hk.string ?? "", value: try hv.yamlText("\(name).\(region).\(hk.string ?? "")"))
                    }
                }
            case "targets":
                guard let list = v.sequence else { throw ConfigError(field: name, reason: "must be a list") }
                for (i, t) in list.enumerated() {
                    c.targets.append(try ProbeTarget.load(t, field: "\(name)[\(i)]", source: "static"))
                }
            case "consul": c.consul = try ConsulConfig.load(v, field: name)
            default: throw ConfigError(field: name, reason: "unknown key")
            }
        }
        try c.validate(field: field)
        return c
    }

    func validate(field: String) throws(ConfigError) {
        if self.interval < .milliseconds(100) {
            throw ConfigError(field: "\(field).interval", reason: "must be at least 100ms")
        }
        if self.timeout <= .zero { throw ConfigError(field: "\(field).timeout", reason: "must be positive") }
        try SidecarConfig.range(self.maxConcurrency, 1...100_000, "\(field).max_concurrency")
        if self.targetsFileRefresh < .milliseconds(100) {
            throw ConfigError(field: "\(field).targets_file_refresh", reason: "must be at least 100ms")
        }
        for (i, t) in self.targets.enumerated() {
            if let interval = t.interval, interval < .milliseconds(100) {
                throw ConfigError(field: "\(field).targets[\(i)].interval", reason: "must be at least 100ms")
            }
            if let timeout = t.timeout, timeout <= .zero {
                throw ConfigError(field: "\(field).targets[\(i)].timeout", reason: "must be positive")
            }
        }
        var names = Set<String>()
        for t in self.targets where !names.insert(t.name + "|" + t.kind.rawValue).inserted {
            throw ConfigError(field: "\(field).targets", reason: "duplicate target \(t.name) (\(t.kind.rawValue))")
        }
    }
}

extension ProbeTarget {
    /// One target from YAML or JSON (the same fields in the config and the targets file).
    static func load(_ node: Node, field: String, source: String) throws(ConfigError) -> ProbeTarget {
        guard let map = node.mapping else { throw ConfigError(field: field, reason: "must be a mapping") }
        var name: String?
        var address: HostPort?
        var region: String?
        var kind = Kind.health
        var service = ""
        var interval: TimeAmountBox?
        var timeout: TimeAmountBox?
        var authority: String?
        for (k, v) in map {
            let key = k.string ?? ""
            let f = "\(field).\(key)"
            switch key {
            case "name": name = try v.yamlText(f)
            case "address": address = try HostPort(parsing: try v.yamlText(f), field: f)
            case "region": region = try v.yamlText(f)
            case "kind":
                guard let k = Kind(rawValue: try v.yamlText(f)) else {
                    throw ConfigError(field: f, reason: "must be health or echo")
                }
                kind = k
            case "service": service = try v.yamlText(f)
            case "interval": interval = TimeAmountBox(try DurationValue.parse(try v.yamlText(f), field: f))
            case "timeout": timeout = TimeAmountBox(try DurationValue.parse(try v.yamlText(f), field: f))
            case "authority": authority = try v.yamlText(f)
            default: throw ConfigError(field: f, reason: "unknown key")
            }
        }
        guard let address else { throw ConfigError(field: "\(field).address", reason: "required") }
        guard let region, !region.isEmpty else { throw ConfigError(field: "\(field).region", reason: "required") }
        var t = ProbeTarget(name: name ?? address.description, address: address, region: region, kind: kind)
        t.service = service
        t.interval = interval?.value
        t.timeout = timeout?.value
        t.authority = authority
        t.source = source
        return t
    }
}

/// Lets an optional `TimeAmount` be assigned from inside a typed-throws closure.
struct TimeAmountBox {
    var value: TimeAmount
    init(_ value: TimeAmount) { self.value = value }
}

extension ConsulConfig {
    static func load(_ node: Node, field: String) throws(ConfigError) -> ConsulConfig {
        guard let map = node.mapping else { throw ConfigError(field: field, reason: "must be a mapping") }
        var c = ConsulConfig()
        for (k, v) in map {
            let key = k.string ?? ""
            let f = "\(field).\(key)"
            switch key {
            case "address": c.address = try HostPort(parsing: try v.yamlText(f), field: f)
            case "token": c.token = try v.yamlText(f)
            case "wait": c.wait = try DurationValue.parse(try v.yamlText(f), field: f)
            case "datacenters":
                guard let list = v.sequence else { throw ConfigError(field: f, reason: "must be a list") }
                c.datacenters = try list.map { (n) throws(ConfigError) in try n.yamlText(f) }
            case "region_for_datacenter":
                guard let m = v.mapping else { throw ConfigError(field: f, reason: "must map datacenters to regions") }
                for (dc, r) in m { c.regionForDatacenter[dc.string ?? ""] = try r.yamlText("\(f).\(dc.string ?? "")") }
            case "services":
                guard let list = v.sequence else { throw ConfigError(field: f, reason: "must be a list") }
                for (i, s) in list.enumerated() {
                    let sf = "\(f)[\(i)]"
                    guard let sm = s.mapping else { throw ConfigError(field: sf, reason: "must be a mapping") }
                    var svc = Service(name: "")
                    for (sk, sv) in sm {
                        let name = "\(sf).\(sk.string ?? "")"
                        switch sk.string ?? "" {
                        case "name": svc.name = try sv.yamlText(name)
                        case "kind":
                            guard let kind = ProbeTarget.Kind(rawValue: try sv.yamlText(name)) else {
                                throw ConfigError(field: name, reason: "must be health or echo")
                            }
                            svc.kind = kind
                        case "service": svc.healthService = try sv.yamlText(name)
                        case "tag": svc.tag = try sv.yamlText(name)
                        default: throw ConfigError(field: name, reason: "unknown key")
                        }
                    }
                    if svc.name.isEmpty { throw ConfigError(field: "\(sf).name", reason: "required") }
                    c.services.append(svc)
                }
            default: throw ConfigError(field: f, reason: "unknown key")
            }
        }
        if c.services.isEmpty {
            throw ConfigError(field: "\(field).services", reason: "at least one service is required")
        }
        return c
    }
}
