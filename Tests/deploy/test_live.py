"""Every PromQL expression of the rules and the dashboard against a real Prometheus on
loopback that scrapes two sidecars carrying gRPC traffic (and probes, when the binary
supports them):

    grpcio client -> mediary-a sidecar (region a) -> gateway-b sidecar (region b, receiver)
                  -> Tests/e2e/grpc_server.py

Each query must evaluate without error; panels over traffic series must return data. Grafana
variables are replaced by concrete values first. The report lists queries that returned
nothing and why that is expected.

The sidecars trace every call (sample ratio 1) to the e2e tests' OTLP receiver on loopback and
Prometheus stores exemplars, so the dashboard's exemplar queries are checked to return
exemplars whose trace id label (the one the Grafana data source links) names an exported trace."""

import json
import re
import sys
import threading
import time
import urllib.parse

import grpc
import pytest
import yaml

from conftest import (DASHBOARD, E2E, LOG_DIR, RULE_FILES, Proc, exemplar_destinations, free_port, http_get, note,
                      probes_supported, start_grpc_server, start_sidecar, tcp_connectable, tool)

sys.path.insert(0, str(E2E))
from otlp_receiver import OTLPReceiver  # noqa: E402  (needs the opentelemetry-proto package)

SERVICE = "insight.test.v1.Test"
VARS = {"region": "a", "hop": "mediary-a", "service": SERVICE,
        "__rate_interval": "30s", "__interval": "15s", "__range": "1m"}
# Series that this test's traffic does not produce; queries over only these may be empty.
NO_EVENTS = ["insight_timing_header_errors_total", "insight_timing_chain_incomplete_total",
             "insight_label_overflow_total", "ALERTS"]
PROBE_SERIES = ["insight_probe_", "_probe_success", "_probe_duration"]


def substitute(expr: str) -> str:
    for k, v in sorted(VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + k + "}", v).replace("$" + k, v)
    assert "$" not in re.sub(r'"[^"]*"', "", expr) or "$1" in expr, f"unreplaced variable in {expr}"
    return expr


class Prom:
    def __init__(self, port):
        self.port = port

    def api(self, path, **params):
        status, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params),
                                timeout=10)
        data = json.loads(body)
        return status, data

    def query(self, expr):
        return self.api("query", query=expr)

    def query_range(self, expr, seconds=30, step=1):
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=step)

    def query_exemplars(self, expr, seconds=120):
        """What Grafana asks for a panel query with exemplars on."""
        end = time.time()
        return self.api("query_exemplars", query=expr, start=end - seconds, end=end)


def drive_traffic(addr, seconds):
    """Unary calls on two threads: mostly OK, some UNAVAILABLE and NOT_FOUND, and a
    server-streaming call now and then."""
    stop = time.monotonic() + seconds
    counts = {"ok": 0, "error": 0}

    def worker(n):
        ch = grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)])
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        stream = ch.unary_stream(f"/{SERVICE}/ServerStream")
        i = 0
        try:
            while time.monotonic() < stop:
                i += 1
                md = [("x-sleep-ms", "5")]
                if i % 10 == 0:
                    md.append(("x-status-code", "14" if n == 0 else "5"))
                try:
                    if i % 25 == 0:
                        list(stream(b"x", metadata=[("x-count", "3"), ("x-size", "10")], timeout=5))
                    else:
                        unary(b"x", metadata=md, timeout=5)
                    counts["ok"] += 1
                except grpc.RpcError:
                    counts["error"] += 1
        finally:
            ch.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    return counts


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prom_exe = tool("prometheus")
    tmp = tmp_path_factory.mktemp("live")
    started = []
    receiver = OTLPReceiver()
    tracing = ["--tracing-otlp-endpoint", receiver.endpoint, "--tracing-sample-ratio", "1"]
    try:
        server = start_grpc_server()
        started.append(server)
        with_probes = probes_supported()
        gw_port, gw_admin, ma_port, ma_admin = (free_port() for _ in range(4))
        gw_cfg = tmp / "gateway-b.yaml"
        gw_cfg.write_text(yaml.safe_dump({"drain_timeout": "1s", **({"receiver": True} if with_probes else {})}))
        gw = start_sidecar("sidecar-gateway-b", [
            "--config", str(gw_cfg), "--listen", f"127.0.0.1:{gw_port}", "--admin", f"127.0.0.1:{gw_admin}",
            "--upstream", f"127.0.0.1:{server.port}", "--hop", "gateway-b", "--region", "b", *tracing])
        started.append(gw)
        ma_cfg = {"drain_timeout": "1s"}
        if with_probes:
            dead = free_port()
            ma_cfg["probes"] = {"interval": "500ms", "timeout": "1s", "targets": [
                # cross-region: sent to the upstream (the gateway-b sidecar), as via a Mediary
                {"name": "gateway-b", "address": f"127.0.0.1:{gw_port}", "region": "b", "kind": "health",
                 "service": ""},
                {"name": "receiver-b", "address": f"127.0.0.1:{gw_port}", "region": "b", "kind": "echo"},
                # same region: dialled directly; one of them is down
                {"name": "backend-a", "address": f"127.0.0.1:{server.port}", "region": "a", "kind": "health",
                 "service": ""},
                {"name": "dead-a", "address": f"127.0.0.1:{dead}", "region": "a", "kind": "health",
                 "service": ""}]}
        else:
            note("live: this binary rejects `probes`: probe queries are only checked for errors")
        (tmp / "mediary-a.yaml").write_text(yaml.safe_dump(ma_cfg))
        ma = start_sidecar("sidecar-mediary-a", [
            "--config", str(tmp / "mediary-a.yaml"), "--listen", f"127.0.0.1:{ma_port}",
            "--admin", f"127.0.0.1:{ma_admin}", "--upstream", f"127.0.0.1:{gw_port}",
            "--hop", "mediary-a", "--region", "a", *tracing])
        started.append(ma)

        port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "external_labels": {"cluster": "test"}},
            "rule_files": [str(f) for f in RULE_FILES],
            "scrape_configs": [{"job_name": "insight-sidecar", "scrape_interval": "1s", "scrape_timeout": "900ms",
                                "static_configs": [{"targets": [f"127.0.0.1:{gw_admin}", f"127.0.0.1:{ma_admin}"]}]}],
        }))
        prom = Proc("prometheus", [prom_exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                                   "--enable-feature=exemplar-storage"], port)
        started.append(prom)

        def ready():
            if not tcp_connectable(port):
                return False
            try:
                return http_get(f"http://127.0.0.1:{port}/-/ready", timeout=1)[0] == 200
            except OSError:
                return False

        prom.wait_until(ready, "ready", timeout=20)
        p = Prom(port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            targets = p.api("targets")[1]["data"]["activeTargets"]
            if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"scrape targets not up: {targets}", pytrace=False)
        counts = drive_traffic(f"127.0.0.1:{ma_port}", 6.0)
        assert counts["ok"] > 50 and counts["error"] > 5, counts
        # The recording rules have evaluated over the traffic once their series exist.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = p.query("hop_segment_next:insight_segment_duration_seconds:p99_rate5m")[1]["data"]["result"]
            if got:
                break
            time.sleep(0.5)
        time.sleep(1.5)
        yield {"prom": p, "probes": with_probes, "counts": counts, "receiver": receiver}
    finally:
        for proc in reversed(started):
            proc.stop()
        receiver.stop()


def rule_exprs():
    for f in RULE_FILES:
        for g in yaml.safe_load(f.read_text())["groups"]:
            for r in g["rules"]:
                yield (r.get("record") or r.get("alert")), r["expr"], "alert" in r


def dashboard_targets():
    d = json.loads(DASHBOARD.read_text())
    for p in d["panels"]:
        for t in p.get("targets", []):
            if t["datasource"]["type"] == "prometheus":
                yield p["title"], t
    for a in d["annotations"]["list"]:
        if a.get("expr"):
            yield "annotation " + a["name"], {"expr": a["expr"], "instant": False}


def expectation(expr, probes):
    if any(s in expr for s in PROBE_SERIES) and not probes:
        return "pending probes"
    if any(s in expr for s in NO_EVENTS) and "or vector(0)" not in expr:
        return "no such events in the test traffic"
    return None


def test_rule_groups_evaluate_without_error(stack):
    rules = stack["prom"].api("rules")[1]["data"]["groups"]
    assert {g["name"] for g in rules} == {"insight-segments", "insight-probes", "insight-proxy", "insight-alerts"}
    for g in rules:
        for r in g["rules"]:
            assert r["health"] == "ok" and not r.get("lastError"), (r["name"], r.get("lastError"))


def test_rule_expressions_run_and_recordings_have_data(stack):
    p = stack["prom"]
    empty = []
    for name, expr, is_alert in rule_exprs():
        status, body = p.query(expr)
        assert status == 200 and body["status"] == "success", (name, body)
        if is_alert:
            continue
        if not body["data"]["result"]:
            why = expectation(expr, stack["probes"])
            assert why, f"recording rule {name} has no data although traffic flowed"
            empty.append(f"{name} ({why})")
        status, rec = p.query(name)
        assert rec["data"]["result"] or empty and empty[-1].startswith(name), f"{name}: not recorded"
    note("live rules: " + (f"empty: {', '.join(empty)}" if empty else "every recording rule has data"))


def test_dashboard_queries_run_and_return_data(stack):
    p = stack["prom"]
    empty, checked = [], 0
    for title, t in dashboard_targets():
        expr = substitute(t["expr"])
        status, body = p.query(expr) if t.get("instant") else p.query_range(expr)
        assert status == 200 and body["status"] == "success", (title, expr, body)
        checked += 1
        if not body["data"]["result"]:
            why = expectation(expr, stack["probes"])
            assert why, f"panel {title!r}: no data for {expr}"
            empty.append(f"{title!r} [{t.get('refId', '-')}] ({why})")
    note(f"live dashboard: {checked} queries ran; " + (f"empty: {'; '.join(empty)}" if empty else "all returned data"))


def test_dashboard_variable_queries(stack):
    """label_values(metric{...}, label) as Grafana runs it: /api/v1/label/<label>/values?match[]=..."""
    p = stack["prom"]
    d = json.loads(DASHBOARD.read_text())
    want = {"region": {"a", "b"}, "hop": {"mediary-a"}, "service": {SERVICE}}
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
        assert m, v["query"]
        status, body = p.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
        assert status == 200 and body["status"] == "success", body
        assert want[v["name"]] <= set(body["data"]), (v["name"], body["data"])


def test_probe_matrix_shows_the_region_pairs(stack):
    if not stack["probes"]:
        pytest.skip("the binary does not support probes yet")
    res = stack["prom"].query("region_pair:insight_probe_success:ratio_rate5m")[1]["data"]["result"]
    got = {(r["metric"]["region"], r["metric"]["target_region"]): float(r["value"][1]) for r in res}
    note(f"live probe matrix: {got}")
    assert set(got) == {("a", "b"), ("a", "a")}, got
    assert got[("a", "b")] == 1.0, got                 # health via upstream + echo at the receiver
    assert 0.3 < got[("a", "a")] < 0.7, got            # backend-a up, dead-a connect errors
    kinds = {r["metric"]["kind"] for r in stack["prom"].query(
        'insight_probe_up{target_region="b"} == 1')[1]["data"]["result"]}
    assert kinds == {"health", "echo"}, kinds


def test_dashboard_exemplars_name_exported_traces(stack):
    """For every panel query with exemplars on, Prometheus returns exemplars (as Grafana asks:
    /api/v1/query_exemplars), each carrying the label the Grafana data source links on, whose
    value is the id of a trace the sidecars exported: the diamond opens a real trace."""
    p, receiver = stack["prom"], stack["receiver"]
    label = exemplar_destinations()[0]["name"]
    wanted = {}
    for title, t in dashboard_targets():
        if not t.get("exemplar"):
            continue
        expr = substitute(t["expr"])
        status, body = p.query_exemplars(expr)
        assert status == 200 and body["status"] == "success", (title, expr, body)
        ids = [e["labels"].get(label) for series in body["data"] for e in series["exemplars"]]
        assert ids, f"panel {title!r} [{t['refId']}]: no exemplars for {expr}"
        assert all(i and re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), (title, label, ids[:5])
        wanted[f"{title} [{t['refId']}]"] = set(ids)
    assert len(wanted) >= 4, wanted
    every = set().union(*wanted.values())
    deadline = time.monotonic() + 15   # spans are exported in batches
    while time.monotonic() < deadline:
        with receiver.lock:
            exported = {s.trace_id for s in receiver.spans}
        if every <= exported:
            break
        time.sleep(0.5)
    missing = every - exported
    assert not missing, f"{len(missing)} of {len(every)} exemplar trace ids were never exported: {sorted(missing)[:5]}"
    note(f"live exemplars: {len(every)} distinct trace ids over {len(wanted)} queries, all among the "
         f"{len(exported)} exported traces")
