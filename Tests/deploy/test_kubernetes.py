"""The Kubernetes manifests: they parse and render, and the sidecar container agrees with
the insight-sidecar command line: ports in args == containerPorts == the ConfigMap's config,
probes on the admin port at paths the admin server serves, the ConfigMap passes
`insight-sidecar check-config`, drain fits in the grace period, non-root and resources."""

import re

import pytest
import yaml

from conftest import (K8S, LOG_DIR, OVERLAYS, PENDING_KEYS, check_config, free_port, http_get, note,
                      start_sidecar)

SIDECAR = "insight-sidecar"
CONFIG_DIR = "/etc/insight"


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)?", str(text))
    assert m, f"bad duration {text!r}"
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def flags(args):
    """--name=value / --name value -> {name: value}; the subcommand is args[0]."""
    out, i = {}, 1
    while i < len(args):
        a = args[i]
        assert a.startswith("--"), f"unexpected argument {a!r}"
        if "=" in a:
            k, v = a[2:].split("=", 1)
        else:
            k, v = a[2:], args[i + 1]
            i += 1
        out[k] = v
        i += 1
    return out


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def sidecar_pods(docs):
    """(deployment, pod spec, sidecar container, configmap data) for each Deployment."""
    cms = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    out = []
    for dep in by_kind(docs, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        sc = [c for c in spec["containers"] if c["name"] == SIDECAR]
        assert len(sc) == 1, f"{dep['metadata']['name']}: no {SIDECAR} container"
        c = sc[0]
        mount = [m for m in c["volumeMounts"] if m["mountPath"] == CONFIG_DIR][0]
        vol = [v for v in spec["volumes"] if v["name"] == mount["name"]][0]
        cm = cms.get(vol["configMap"]["name"])
        assert cm, f"{dep['metadata']['name']}: ConfigMap {vol['configMap']['name']} not in the output"
        out.append((dep, spec, c, cm["data"]))
    assert {d["metadata"]["name"] for d, *_ in out} == {"gateway", "mediary"}
    return out


def test_every_yaml_file_parses():
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text())]
        assert docs, f"{f} is empty"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(rendered, overlay):
    kinds = sorted(d["kind"] for d in rendered[overlay])
    assert kinds == sorted(["ConfigMap", "ConfigMap", "Deployment", "Deployment", "Service", "Service",
                            "PodMonitor", "PrometheusRule"]), kinds
    for d in rendered[overlay]:
        assert d["metadata"].get("namespace") == "insight", d["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sidecar_ports_args_and_config_agree(rendered, overlay):
    region = overlay.split("-", 1)[1]
    for dep, spec, c, data in sidecar_pods(rendered[overlay]):
        name = dep["metadata"]["name"]
        assert c["args"][0] == "run", c["args"]
        f = flags(c["args"])
        cfg_path = f["config"]
        assert cfg_path.startswith(CONFIG_DIR + "/") and cfg_path.split("/")[-1] in data, \
            f"{name}: --config {cfg_path} is not a key of the mounted ConfigMap"
        cfg = yaml.safe_load(data[cfg_path.split("/")[-1]])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert port_of(f["listen"]) == ports["grpc"] == port_of(cfg["listen"]), (name, f, ports, cfg["listen"])
        assert port_of(f["admin"]) == ports["admin"] == port_of(cfg["admin"]), (name, f, ports, cfg["admin"])
        assert f["admin"].startswith("0.0.0.0:") and cfg["admin"].startswith("0.0.0.0:"), \
            f"{name}: the admin listener must be reachable by the kubelet and Prometheus"
        assert cfg["hop"] == f"{name}-{region}" and cfg["region"] == region, (name, cfg["hop"], cfg["region"])
        # The business container listens on the loopback port the sidecar forwards to.
        app = [x for x in spec["containers"] if x["name"] == name][0]
        env = {e["name"]: e["value"] for e in app.get("env", [])}
        assert cfg["upstream"].startswith("127.0.0.1:") and cfg["upstream"] in env.values(), (name, env)
        assert port_of(cfg["upstream"]) not in ports.values()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_admin_port_and_health_paths(rendered, overlay):
    for dep, spec, c, data in sidecar_pods(rendered[overlay]):
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
            get = c[probe]["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
            assert get["path"] == path and port == ports["admin"], (dep["metadata"]["name"], probe, get)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_podmonitor_select_the_pods(rendered, overlay):
    docs = rendered[overlay]
    pods = sidecar_pods(docs)
    for svc in by_kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        match = [(d, c) for d, s, c, _ in pods
                 if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        assert len(match) == 1, svc["metadata"]["name"]
        names = {p["name"] for p in match[0][1]["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] == "grpc" and p["targetPort"] in names and p["port"] == 8080
    pm = by_kind(docs, "PodMonitor")[0]
    for d, s, c, _ in pods:
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["port"] == "admin" and ep["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "insight-sidecar", "action": "replace"} in ep["relabelings"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_drain_fits_in_grace_period_and_pod_is_locked_down(rendered, overlay):
    for dep, spec, c, data in sidecar_pods(rendered[overlay]):
        name = dep["metadata"]["name"]
        cfg = yaml.safe_load(data[flags(c["args"])["config"].split("/")[-1]])
        drain = parse_duration(cfg.get("drain_timeout", "30s"))
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > drain + pre_stop, f"{name}: grace {grace}s <= preStop {pre_stop}s + drain {drain}s"
        app = [x for x in spec["containers"] if x["name"] == name][0]
        app_sleep = app["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + drain < app_sleep < grace, \
            f"{name}: the {name} container must outlive the sidecar's drain and stop within the grace period"
        assert spec["securityContext"]["runAsNonRoot"] is True
        for x in spec["containers"]:
            sc = x["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, x["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], x["name"]
        r = c["resources"]
        assert {"cpu", "memory"} <= set(r["requests"]) and {"cpu", "memory"} <= set(r["limits"]), r
        cpu_limit = float(str(r["limits"]["cpu"]).rstrip("m")) / (1000 if str(r["limits"]["cpu"]).endswith("m") else 1)
        assert cfg.get("event_loops", 0) and cfg["event_loops"] <= max(1, int(cpu_limit)), \
            f"{name}: event_loops {cfg.get('event_loops')} vs CPU limit {cpu_limit}"


def extracted_configs(rendered):
    for overlay in OVERLAYS:
        for dep, spec, c, data in sidecar_pods(rendered[overlay]):
            key = flags(c["args"])["config"].split("/")[-1]
            path = LOG_DIR / f"{overlay}-{dep['metadata']['name']}-{key}"
            path.write_text(data[key])
            yield f"{overlay}/{dep['metadata']['name']}", c, path


def container_args_with(c, path):
    """The container's args for check-config, with --config pointing at the extracted file."""
    f = flags(c["args"])
    f["config"] = str(path)
    return [x for k, v in f.items() for x in (f"--{k}", v)]


def test_configmaps_pass_check_config(rendered):
    """Each ConfigMap, exactly as deployed, with the container's flags. Fails while the
    binary rejects a key (e.g. probes before the probe feature lands), naming that key."""
    failures = []
    for name, c, path in extracted_configs(rendered):
        rc, out = check_config(container_args_with(c, path))
        if rc != 0:
            key = re.search(r"invalid configuration: ([\w.]+):", out)
            pending = key and key.group(1).split(".")[0] in PENDING_KEYS
            note(f"check-config {name}: REJECTED key `{key.group(1) if key else '?'}`"
                 + (" (pending feature: passes once it lands)" if pending else "") + f": {out}")
            failures.append(f"{name}: {out}")
        else:
            note(f"check-config {name}: ok")
    assert not failures, "\n".join(failures)


def test_configmaps_without_pending_keys_pass_check_config(rendered):
    """The same without the keys of not-yet-landed features: everything else must be valid now."""
    for name, c, path in extracted_configs(rendered):
        cfg = yaml.safe_load(path.read_text())
        for k in PENDING_KEYS:
            cfg.pop(k, None)
        stripped = path.with_suffix(".stripped.yaml")
        stripped.write_text(yaml.safe_dump(cfg))
        rc, out = check_config(container_args_with(c, stripped))
        assert rc == 0 and out.startswith("configuration ok"), f"{name}: {out}"
        assert f"hop: {cfg['hop']}" in out and f"admin: {cfg['admin']}" in out, out


def test_admin_paths_of_the_probes_are_served(rendered):
    """Start the sidecar with a deployed config (ports moved to loopback, pending keys removed)
    and GET the probe paths: /healthz 200, /readyz answers (503: no upstream here), not 404."""
    name, c, path = next(iter(extracted_configs(rendered)))
    cfg = yaml.safe_load(path.read_text())
    for k in PENDING_KEYS:
        cfg.pop(k, None)
    cfg_path = path.with_suffix(".local.yaml")
    cfg_path.write_text(yaml.safe_dump(cfg))
    listen, admin, upstream = free_port(), free_port(), free_port()
    sc = start_sidecar("probe-paths", ["--config", str(cfg_path), "--listen", f"127.0.0.1:{listen}",
                                       "--admin", f"127.0.0.1:{admin}", "--upstream", f"127.0.0.1:{upstream}"])
    try:
        paths = {p: c[k]["httpGet"]["path"] for k, p in [("livenessProbe", "live"), ("readinessProbe", "ready")]}
        status, body = http_get(f"http://127.0.0.1:{admin}{paths['live']}")
        assert status == 200, (status, body)
        status, body = http_get(f"http://127.0.0.1:{admin}{paths['ready']}")
        assert status == 503 and "not ready" in body, (status, body)
        status, _ = http_get(f"http://127.0.0.1:{admin}/metrics")
        assert status == 200
    finally:
        sc.stop()


def test_dockerfile_shape():
    """The image cannot be built here (no container engine); check what can be read."""
    text = (K8S.parent / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) == 2 and froms[0].startswith("swift:6.3") and froms[1] == "debian:bookworm-slim", froms
    runtime = text.split("FROM debian:bookworm-slim", 1)[1]
    pkgs = re.search(r"apt-get install -y --no-install-recommends ([^\\\n&]+)", runtime).group(1).split()
    assert sorted(pkgs) == ["libnghttp2-14", "libssl3"], pkgs
    assert "--static-swift-stdlib" in text
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", user
    assert (K8S.parent / "Dockerfile.dockerignore").read_text().count(".build") >= 1
