"""Prometheus rules, scrape config and Grafana dashboard, checked offline: promtool check and
unit tests, runbook links, generated files in sync, dashboard structure."""

import importlib.util
import json
import re
import subprocess

import yaml

from conftest import (DASHBOARD, DEPLOY, HERE, K8S, LOG_DIR, OPERATIONS, RULE_FILES, exemplar_destinations,
                      exemplar_label, grafana_datasources, note, tool)


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def alert_rules():
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


def github_anchors(markdown: str):
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if m:
            text = re.sub(r"`", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text)))
    return anchors


def run(argv, **kw):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    return out.returncode, (out.stdout + out.stderr).strip()


def test_promtool_check_rules():
    rc, out = run([tool("promtool"), "check", "rules"] + [str(f) for f in RULE_FILES])
    assert rc == 0, out


def test_promtool_unit_tests():
    rc, out = run([tool("promtool"), "test", "rules", str(HERE / "rules_test.yaml")])
    assert rc == 0, out


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load((HERE / "rules_test.yaml").read_text())["tests"]
    fires, quiet = set(), set()
    for t in tests:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fires == set(), f"alerts never shown firing in rules_test.yaml: {names - fires}"
    assert names - quiet == set(), f"alerts never shown quiet in rules_test.yaml: {names - quiet}"


def test_every_alert_has_runbook_anchor_and_severity():
    anchors = github_anchors(OPERATIONS.read_text())
    for r in alert_rules():
        url = r.get("annotations", {}).get("runbook_url", "")
        assert re.match(r"^https://\S+/Docs/operations\.md#[\w-]+$", url), f"{r['alert']}: runbook_url {url!r}"
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{r['alert']}: no heading for #{anchor} in Docs/operations.md"
        assert anchor == r["alert"].lower(), f"{r['alert']}: runbook anchor {anchor} is not the alert's section"
        assert r["labels"].get("severity") in {"critical", "warning"}, r["alert"]
        assert r["annotations"].get("summary") and r["annotations"].get("description"), r["alert"]


def test_operations_doc_sections():
    anchors = github_anchors(OPERATIONS.read_text())
    for needed in ["thanos-external-labels", "deploying-with-kustomize", "container-image"]:
        assert needed in anchors, f"Docs/operations.md lacks a section #{needed}"


def test_prometheusrule_matches_rule_files():
    gen = load_module(DEPLOY / "prometheus/make-prometheusrule.py", "make_prometheusrule")
    committed = (K8S / "base/prometheusrule.yaml").read_text()
    assert committed == gen.render(), "run python3 Deploy/prometheus/make-prometheusrule.py"
    doc = yaml.safe_load(committed)
    assert doc["kind"] == "PrometheusRule" and doc["spec"]["groups"] == gen.groups()


def test_scrape_config_is_valid():
    """promtool check config on Deploy/prometheus/scrape-config.yaml. Debian's Prometheus is
    built without Kubernetes service discovery; then kubernetes_sd_configs is swapped for a
    static target and everything else (relabelling, rule files, external labels) is checked."""
    promtool = tool("promtool")
    src = DEPLOY / "prometheus/scrape-config.yaml"
    cfg = yaml.safe_load(src.read_text())
    assert set(cfg["global"]["external_labels"]) >= {"region", "cluster"}
    jobs = [s["job_name"] for s in cfg["scrape_configs"]]
    assert jobs == ["insight-sidecar"], jobs
    rc, out = run([promtool, "check", "config", str(src)])
    if rc != 0 and "kubernetes_sd_configs not found" in out:
        note("scrape-config.yaml: this promtool lacks Kubernetes SD; checked with kubernetes_sd_configs"
             " replaced by a static target")
        for s in cfg["scrape_configs"]:
            s.pop("kubernetes_sd_configs", None)
            s["static_configs"] = [{"targets": ["127.0.0.1:9901"]}]
        cfg["rule_files"] = [str(src.parent / f) for f in cfg["rule_files"]]
        copy = LOG_DIR / "scrape-config-static.yaml"
        copy.write_text(yaml.safe_dump(cfg))
        rc, out = run([promtool, "check", "config", str(copy)])
    assert rc == 0, out


def test_dashboard_is_generated_and_well_formed():
    gen = load_module(DEPLOY / "grafana/make-dashboard.py", "make_dashboard")
    text = DASHBOARD.read_text()
    assert text == gen.render(), "run python3 Deploy/grafana/make-dashboard.py"
    d = json.loads(text)
    names = [v["name"] for v in d["templating"]["list"]]
    assert {"datasource", "region", "hop", "service"} <= set(names)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    builtin = {"__rate_interval", "__interval", "__range", "datasource"}
    for p in d["panels"]:
        for t in p.get("targets", []):
            for var in re.findall(r"\$(\w+)|\$\{(\w+)\}", t.get("expr") or t["query"]):
                v = var[0] or var[1]
                assert v in names or v in builtin, f"panel {p['title']!r}: unknown variable ${v}"
    titles = " | ".join(p["title"] for p in d["panels"]).lower()
    for needed in ["probe success ratio", "latency breakdown by segment", "segment p99 vs slo threshold",
                   "proxy overhead", "errors by grpc code", "traffic vs probes"]:
        assert needed in titles, f"dashboard lacks a panel '{needed}'"
    stacked = [p for p in d["panels"] if "breakdown" in p["title"].lower()][0]
    assert stacked["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    matrix = [p for p in d["panels"] if p["title"].lower().startswith("probe success ratio")][0]
    assert matrix["transformations"][0]["options"]["rowField"] == "region"
    assert matrix["transformations"][0]["options"]["columnField"] == "target_region"


def test_dashboard_histogram_queries_show_exemplars_linked_to_traces():
    """Every range query over histogram buckets asks for exemplars (and only those: exemplars
    live on the bucket series); the traces data source is a variable; the traces panel uses it."""
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    traces = variables.get("traces_datasource")
    assert traces and traces["type"] == "datasource" and traces["query"] == "tempo", traces
    with_exemplars = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            if t["datasource"]["type"] != "prometheus":
                assert t["datasource"]["uid"] == "${traces_datasource}", (p["title"], t["datasource"])
                continue
            histogram = "_bucket{" in t["expr"] and not t["instant"]
            assert t.get("exemplar", False) == histogram, \
                f"panel {p['title']!r} [{t['refId']}]: exemplar must be {histogram} for {t['expr']}"
            if histogram:
                with_exemplars.append(f"{p['title']} [{t['refId']}]")
    assert len(with_exemplars) >= 4, with_exemplars
    trace_panels = [p for p in d["panels"] if p.get("datasource", {}).get("uid") == "${traces_datasource}"]
    assert len(trace_panels) == 1 and trace_panels[0]["targets"][0]["queryType"] == "traceql", trace_panels
    note(f"dashboard exemplars on: {'; '.join(with_exemplars)}")


def test_grafana_datasources_link_exemplars_to_the_traces_datasource():
    """The provisioned Prometheus data source turns the label the sidecar exports into a link to
    the provisioned traces data source, of the type the dashboard variable offers."""
    label = exemplar_label()
    dests = exemplar_destinations()
    assert [x["name"] for x in dests] == [label], (dests, label)
    by_uid = {ds["uid"]: ds for ds in grafana_datasources()}
    target = by_uid.get(dests[0]["datasourceUid"])
    assert target, f"datasourceUid {dests[0]['datasourceUid']!r} is not a provisioned data source"
    variable = [v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]
                if v["name"] == "traces_datasource"][0]
    assert target["type"] == variable["query"], (target, variable)
    prom = [ds for ds in grafana_datasources() if ds["type"] == "prometheus"][0]
    dash_prom = [v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["name"] == "datasource"][0]
    assert dash_prom["query"] == prom["type"]
