#!/usr/bin/env python3
"""Writes Deploy/grafana/insight-dashboard.json (Grafana 10/11 dashboard, Prometheus datasource).
Edit the panels here and re-run; Tests/deploy checks that the JSON is what this script writes
and runs every query against a real Prometheus.

    python3 Deploy/grafana/make-dashboard.py

Queries use the recording rules of Deploy/prometheus/rules/insight-recording.rules.yaml where
a rule exists (probe matrix, segment p99, SLO burn), raw series elsewhere.

Exemplars: every range query over a histogram's `_bucket` series asks for exemplars; the
sidecar attaches the call's trace id to them as `trace_id`, and the Prometheus data source's
exemplar link (Deploy/grafana/provisioning/datasources/insight.yaml) opens that trace in the
traces data source. The `traces_datasource` variable picks that data source for the traces panel.
"""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "insight-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
TRACES_DS = {"type": "tempo", "uid": "${traces_datasource}"}
SLO_THRESHOLD_S = 0.25  # the le="0.25" bucket of the segment SLO (insight-recording.rules.yaml)
OVERHEAD_ALERT_S = 0.005  # InsightProxyOverheadHigh

_next_id = [0]


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    """A Prometheus query. Range queries over histogram buckets show exemplars (each one a
    call's trace id, linked to its trace by the data source's exemplar link)."""
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant, "format": fmt,
         "exemplar": not instant and "_bucket{" in expr}
    return t


def traceql_target(query, limit=20):
    """A TraceQL search in the traces data source (Tempo)."""
    return {"datasource": TRACES_DS, "refId": "A", "queryType": "traceql", "query": query,
            "limit": limit, "tableType": "traces"}


def steps(*pairs):
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in pairs]}


def panel(kind, title, targets, x, y, w, h, unit="short", description="", thresholds=None,
          custom=None, options=None, transformations=None, overrides=None, extra_defaults=None):
    _next_id[0] += 1
    defaults = {"unit": unit, "thresholds": thresholds or steps((None, "green"))}
    if custom:
        defaults["custom"] = custom
    if extra_defaults:
        defaults.update(extra_defaults)
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p = {"id": _next_id[0], "type": kind, "title": title, "description": description,
         "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
         "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
         "options": options or {}}
    if transformations:
        p["transformations"] = transformations
    return p


def row(title, y):
    _next_id[0] += 1
    return {"id": _next_id[0], "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def timeseries(title, targets, x, y, w=12, h=8, unit="s", stack=False, threshold_line=None, **kw):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 30 if stack else 0,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "thresholdsStyle": {"mode": "line+area" if threshold_line else "off"}}
    thresholds = None
    if threshold_line is not None:
        thresholds = steps((None, "transparent"), (threshold_line, "red"))
    return panel("timeseries", title, targets, x, y, w, h, unit=unit, custom=custom,
                 thresholds=thresholds,
                 options={"legend": {"displayMode": "table", "placement": "bottom",
                                     "calcs": ["mean", "max", "lastNotNull"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}, **kw)


def matrix(title, expr, x, y, unit, thresholds, description):
    """A region x region table: rows = source region, columns = target region."""
    return panel(
        "table", title, [target(expr, instant=True, fmt="table")], x, y, 12, 8, unit=unit,
        description=description, thresholds=thresholds,
        custom={"cellOptions": {"type": "color-background"}, "align": "center"},
        transformations=[{"id": "groupingToMatrix",
                          "options": {"rowField": "region", "columnField": "target_region",
                                      "valueField": "Value", "emptyValue": "null"}}],
        options={"showHeader": True, "cellHeight": "md"})


def build():
    panels = []
    y = 0
    panels.append(row("Probes: region x region", y)); y += 1
    panels.append(matrix(
        "Probe success ratio (rows: from region, columns: to region)",
        "region_pair:insight_probe_success:ratio_rate5m", 0, y, "percentunit",
        steps((None, "red"), (0.9, "orange"), (0.99, "green")),
        "Share of successful probes over 5 minutes. Alert InsightCrossRegionProbeFailing below 90%."))
    panels.append(matrix(
        "Probe p99 latency (rows: from region, columns: to region)",
        "region_pair:insight_probe_duration_seconds:p99_rate5m", 12, y, "s",
        steps((None, "green"), (0.1, "orange"), (0.25, "red")),
        "p99 of successful probes over 5 minutes."))
    y += 8
    panels.append(timeseries(
        "Probe success by target (from $region)",
        [target('region_target:insight_probe_success:ratio_rate5m{region=~"$region"}',
                "{{region}} -> {{target}} ({{target_region}}, {{kind}})")],
        0, y, unit="percentunit", threshold_line=None))
    panels.append(timeseries(
        "Probe results (from $region)",
        [target('sum by (target, result) (rate(insight_probe_total{region=~"$region"}[$__rate_interval]))',
                "{{target}} {{result}}")],
        12, y, unit="reqps"))
    y += 8

    panels.append(row("Path latency as seen at $hop (the outermost sidecar sees the whole path)", y)); y += 1
    panels.append(timeseries(
        "Latency breakdown by segment (mean, stacked)",
        [target('sum by (segment, next) (rate(insight_segment_duration_seconds_sum{hop="$hop", source="traffic"}[$__rate_interval]))'
                ' / sum by (segment, next) (rate(insight_segment_duration_seconds_count{hop="$hop", source="traffic"}[$__rate_interval]))',
                "{{segment}} -> {{next}}")],
        0, y, stack=True,
        description="Mean time per segment of the calls passing $hop; the stack is the mean call duration behind $hop. "
                    "segment = the hop the time belongs to (including the wire to the next sidecar)."))
    panels.append(timeseries(
        "Segment p99 vs SLO threshold (250 ms)",
        [target('hop_segment_next:insight_segment_duration_seconds:p99_rate5m{hop="$hop", source="traffic"}',
                "{{segment}} -> {{next}}"),
         target(f"vector({SLO_THRESHOLD_S})", "SLO threshold")],
        12, y, threshold_line=SLO_THRESHOLD_S,
        description="SLO: 99% of each segment's traffic observations <= 250 ms (Docs/operations.md)."))
    y += 8
    panels.append(timeseries(
        "Segment SLO burn rate (1h and 5m windows)",
        [target('hop_segment_next:insight_segment_slo_errors:ratio_rate1h{hop="$hop"} / 0.01',
                "{{segment}} -> {{next}} 1h"),
         target('hop_segment_next:insight_segment_slo_errors:ratio_rate5m{hop="$hop"} / 0.01',
                "{{segment}} -> {{next}} 5m")],
        0, y, unit="x", threshold_line=6,
        description="Error budget burn rate: 1 = spending exactly the 1% budget. Pages at 14.4 (1h and 5m), warns at 6 (6h and 30m)."))
    panels.append(timeseries(
        "Call duration behind $hop by method (p50, p99)",
        [target('histogram_quantile(0.99, sum by (le, service, method) (rate(insight_upstream_duration_seconds_bucket{hop="$hop", service=~"$service", source="traffic"}[$__rate_interval])))',
                "p99 {{service}}/{{method}}"),
         target('histogram_quantile(0.5, sum by (le, service, method) (rate(insight_upstream_duration_seconds_bucket{hop="$hop", service=~"$service", source="traffic"}[$__rate_interval])))',
                "p50 {{service}}/{{method}}")],
        12, y))
    y += 8
    traces = panel(
        "table", "Traces through $hop (Tempo: $traces_datasource)",
        [traceql_target('{ resource.insight.hop = "$hop" }')], 0, y, 24, 8, unit="none",
        description="Recent traces with a span of the sidecar at $hop (tracing.otlp_endpoint set). "
                    "The diamonds on the histogram panels are exemplars: each opens the trace of one call "
                    "through the Prometheus data source's exemplar link (label trace_id).",
        options={"showHeader": True, "cellHeight": "sm"})
    traces["datasource"] = TRACES_DS
    panels.append(traces)
    y += 8

    panels.append(row("Sidecar at $hop: overhead, errors, traffic", y)); y += 1
    panels.append(timeseries(
        "Proxy overhead (p50, p99)",
        [target('histogram_quantile(0.99, sum by (le, hop) (rate(insight_proxy_overhead_seconds_bucket{hop="$hop"}[$__rate_interval])))',
                "p99 {{hop}}"),
         target('histogram_quantile(0.5, sum by (le, hop) (rate(insight_proxy_overhead_seconds_bucket{hop="$hop"}[$__rate_interval])))',
                "p50 {{hop}}")],
        0, y, threshold_line=OVERHEAD_ALERT_S,
        description="The sidecar's own time per stream. Alert InsightProxyOverheadHigh: p99 > 5 ms for 10 minutes."))
    panels.append(timeseries(
        "Errors by gRPC code",
        [target('sum by (code) (rate(insight_requests_total{hop="$hop", service=~"$service", source="traffic", code!~"OK|2.."}[$__rate_interval]))',
                "{{code}}")],
        12, y, unit="reqps", stack=True))
    y += 8
    panels.append(timeseries(
        "Traffic vs probes",
        [target('sum by (source) (rate(insight_requests_total{hop="$hop"}[$__rate_interval]))',
                "calls through $hop: {{source}}"),
         target('sum by (kind) (rate(insight_probe_total{region=~"$region"}[$__rate_interval]))',
                "probes sent from $region: {{kind}}")],
        0, y, unit="reqps",
        description="source=probe: probe calls passing this hop; probes sent: calls the sidecars of $region start."))
    panels.append(timeseries(
        "Calls per interval by code",
        [target('sum by (code) (increase(insight_requests_total{hop="$hop", service=~"$service"}[$__interval]))',
                "{{code}}")],
        12, y, unit="short", stack=True))
    y += 8
    panels.append(timeseries(
        "Upstream failures (all sidecars)",
        [target('sum by (instance) (rate(insight_upstream_unavailable_total{job="insight-sidecar"}[$__rate_interval]))',
                "unavailable {{instance}}"),
         target('sum by (instance) (rate(insight_upstream_connect_errors_total{job="insight-sidecar"}[$__rate_interval]))',
                "connect errors {{instance}}"),
         target('sum by (instance, side, direction) (rate(insight_stream_resets_total{job="insight-sidecar"}[$__rate_interval]))',
                "resets {{side}} {{direction}} {{instance}}")],
        0, y, unit="reqps"))
    panels.append(timeseries(
        "Timing header problems and label overflow at $hop",
        [target('sum by (reason) (rate(insight_timing_header_errors_total{hop="$hop"}[$__rate_interval]))',
                "header error {{reason}}"),
         target('sum(rate(insight_timing_chain_incomplete_total{hop="$hop"}[$__rate_interval]))',
                "chain incomplete"),
         target('sum(rate(insight_label_overflow_total{hop="$hop"}[$__rate_interval]))',
                "label overflow")],
        12, y, unit="reqps"))
    y += 8
    panels.append(panel(
        "stat", "Sidecars scraped (up / all)",
        [target('sum(up{job="insight-sidecar"})', "up", instant=True),
         target('count(up{job="insight-sidecar"})', "targets", instant=True)],
        0, y, 6, 4, options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}))
    panels.append(panel(
        "stat", "Downstream connections and active streams (all sidecars)",
        [target('sum(insight_downstream_connections_active{job="insight-sidecar"})', "connections", instant=True),
         target('sum(insight_streams_active{job="insight-sidecar"})', "streams", instant=True)],
        6, y, 6, 4, options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}))
    panels.append(panel(
        "stat", "Probe targets down (from $region)",
        [target('count(insight_probe_up{region=~"$region"} == 0) or vector(0)', "down", instant=True)],
        12, y, 6, 4, thresholds=steps((None, "green"), (1, "red")),
        options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}))
    panels.append(panel(
        "stat", "Firing Insight alerts",
        [target('count(ALERTS{alertname=~"Insight.*", alertstate="firing"}) or vector(0)', "firing", instant=True)],
        18, y, 6, 4, thresholds=steps((None, "green"), (1, "red")),
        options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}))

    def query_var(name, label, query, multi, include_all):
        v = {"name": name, "label": label, "type": "query", "datasource": DS,
             "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
             "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
             "current": {}, "options": [], "hide": 0}
        if include_all:
            v["allValue"] = ".*"
        return v

    templating = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "options": []},
        query_var("region", "Region", "label_values(insight_requests_total, region)", True, True),
        query_var("hop", "Hop (path seen from here)", 'label_values(insight_requests_total{region=~"$region"}, hop)',
                  False, False),
        query_var("service", "Service", 'label_values(insight_requests_total{hop="$hop"}, service)', True, True),
        {"name": "traces_datasource", "label": "Traces", "type": "datasource", "query": "tempo",
         "description": "The Tempo data source the sidecars export spans to (its uid is also the "
                        "datasourceUid of the Prometheus data source's exemplar link).",
         "current": {}, "hide": 0, "refresh": 1, "options": []},
    ]
    return {
        "uid": "insight-hops",
        "title": "Insight: cross-region hops",
        "description": "Per-hop latency, probes and sidecar health. Runbooks: Docs/operations.md.",
        "tags": ["insight", "grpc", "sidecar"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": [
            {"name": "Insight alerts", "datasource": DS, "enable": True, "iconColor": "red",
             "expr": 'ALERTS{alertname=~"Insight.*", alertstate="firing"}',
             "titleFormat": "{{alertname}}", "textFormat": "{{hop}} {{segment}} {{target}}", "step": "60s"}]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
