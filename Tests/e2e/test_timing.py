"""Hop timing end to end: attribution against ground truth, header propagation,
strip options, hops that drop trailers, non-gRPC trailers, hostile headers.

The main topology (``timing_chain`` in conftest.py), with real third-party hops:

    grpcio -> sidecar mediary-a (region a) -> nghttpx (Mediary A)
           -> wan_relay.py (20 ms each way)
           -> sidecar mediary-b (region b) -> nghttpx (Mediary B)
           -> sidecar gateway-b (region b) -> nghttpx (Gateway B) -> grpc_server.py

Ground truth: the relay adds 2 x 20 ms to the mediary-a segment; the service
sleeps 15 ms (its real latency, measured directly, is the truth for the
innermost segment); the mediary-b segment is only nghttpx on loopback.
"""

import json
import re
import statistics
import time

import grpc
import pytest

from conftest import (TEST_SERVICE, h2_request, make_channel, metric_sum, metrics_text,
                      parse_sf_list, scrape)

WARMUP = 20
UNARY_CALLS = 50
STREAM_CALLS = 30
PROBE_CALLS = 40
SLEEP_MS = 15
TOLERANCE_MS = 3.0
# The sidecar's own time per stream (`self`). Debug builds on a small shared box
# are slow and noisy (a single scheduling hiccup of ~10 ms was seen in a clean CI
# run; on a slow day medians of 0.95-1.02 ms and a p90 of 3.2 ms, the same for the
# builds before and after a change): the median must stay under 2 ms, p90 under 5 ms,
# and the worst call under 25 ms. Release figures are in Docs/performance.md.
SELF_MEDIAN_MAX_MS = 2.0
SELF_P90_MAX_MS = 5.0
SELF_MAX_MS = 25.0
HEX32 = re.compile(r"^[0-9a-f]{32}$")
SEG = "insight_segment_duration_seconds"
HOPS = ["mediary-a", "mediary-b", "gateway-b"]
NEXT = {"mediary-a": "mediary-b", "mediary-b": "gateway-b", "gateway-b": "service"}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def md_values(metadata, key):
    return [m.value for m in (metadata or ()) if m.key == key]


def timing_entries(trailing_metadata):
    """insight-timing trailer -> [{hop, dur, ttfb, self}], innermost first."""
    values = md_values(trailing_metadata, "insight-timing")
    assert values, f"no insight-timing trailer in {trailing_metadata}"
    out = []
    for hop, params in parse_sf_list(", ".join(values)):
        out.append({"hop": hop, "dur": params["dur"], "ttfb": params.get("ttfb"), "self": params["self"]})
    return out


def segments(entries):
    """As the outermost sidecar computes them: {hop: (next, ms)}."""
    out = {}
    for i, e in enumerate(entries):
        if i == 0:
            out[e["hop"]] = ("service", e["dur"])
        else:
            inner = entries[i - 1]
            out[e["hop"]] = (inner["hop"], max(0.0, e["dur"] - (inner["dur"] + inner["self"])))
    return out


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def seg_stats(text, recorder, segment, source="traffic"):
    labels = dict(hop=recorder, segment=segment, next=NEXT[segment], source=source)
    return (metric_sum(text, SEG + "_count", **labels) or 0.0,
            metric_sum(text, SEG + "_sum", **labels) or 0.0)


def wait_metric(sidecar, predicate, timeout=3.0):
    """Metrics are recorded when the stream is over on both sides, which may be
    a moment after the client saw the trailers: poll (bounded)."""
    deadline = time.monotonic() + timeout
    text = metrics_text(sidecar)
    while not predicate(text) and time.monotonic() < deadline:
        time.sleep(0.05)
        text = metrics_text(sidecar)
    return text


def unary(channel, payload=b"ping", metadata=(), method="Unary", timeout=5.0):
    fn = channel.unary_unary(TEST_SERVICE + method)
    return fn.with_call(payload, metadata=list(metadata), timeout=timeout)


def server_stream(channel, metadata=(), timeout=5.0):
    it = channel.unary_stream(TEST_SERVICE + "ServerStream")(b"", metadata=list(metadata), timeout=timeout)
    msgs = list(it)
    return msgs, it


def direct_latency_ms(addr, call, n=30):
    """Median client-observed latency of ``call(channel)`` straight to the service."""
    ch = make_channel(addr)
    try:
        for _ in range(5):
            call(ch)
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            call(ch)
            xs.append((time.perf_counter() - t) * 1000)
        return statistics.median(xs)
    finally:
        ch.close()


def server_headers(channel, metadata=()):
    """What the service received: [[key, value]] (via the Headers method)."""
    resp, _ = unary(channel, b"", metadata, method="Headers")
    return json.loads(resp)


def insight_headers(pairs):
    return [(k, v) for k, v in pairs if k.startswith("insight-")]


def check_attribution(chain, entries_list, what, truth_gateway_ms, truth_floor_ms, truth_wan_ms):
    """Shared checks for one batch of calls through the timing chain."""
    per_seg = {h: [] for h in HOPS}
    per_self = {h: [] for h in HOPS}
    for entries in entries_list:
        assert [e["hop"] for e in entries] == ["gateway-b", "mediary-b", "mediary-a"], entries
        for e in entries:
            per_self[e["hop"]].append(e["self"])
            assert e["ttfb"] is not None and 0 <= e["ttfb"] <= e["dur"], e
        for hop, (nxt, ms) in segments(entries).items():
            assert nxt == NEXT[hop]
            per_seg[hop].append(ms)
    med = {h: statistics.median(v) for h, v in per_seg.items()}
    self_stats = {h: (statistics.median(v), pct(v, 90), pct(v, 99), max(v)) for h, v in per_self.items()}
    report = (f"{what}: segment medians {({h: round(v, 3) for h, v in med.items()})}, "
              f"self median/p90/p99/max {({h: tuple(round(x, 3) for x in v) for h, v in self_stats.items()})}, "
              f"service truth {truth_gateway_ms:.3f} ms, WAN path truth {truth_wan_ms:.3f} ms")
    print(report)
    wan = 2 * chain.wan_delay_ms
    # The segment holds the 2 x 20 ms relay plus nghttpx, as measured without sidecars.
    assert med["mediary-a"] >= wan, report
    assert abs(med["mediary-a"] - truth_wan_ms) <= TOLERANCE_MS, report
    assert abs(med["gateway-b"] - truth_gateway_ms) <= TOLERANCE_MS, report
    assert med["gateway-b"] >= truth_floor_ms, report
    assert med["mediary-b"] < TOLERANCE_MS, report
    for hop, (m, p90, _, mx) in self_stats.items():
        assert m < SELF_MEDIAN_MAX_MS and p90 < SELF_P90_MAX_MS and mx < SELF_MAX_MS, f"{hop} self; {report}"
    return per_seg


def check_segment_metrics(chain, before, per_seg, n, source="traffic"):
    """The outermost sidecar's histograms got exactly these n observations."""
    ma = chain.mediary_a

    def done(text):
        return all(seg_stats(text, "mediary-a", h, source)[0] - before[h][0] >= n for h in HOPS)

    after = wait_metric(ma, done)
    for hop in HOPS:
        c0, s0 = before[hop]
        c1, s1 = seg_stats(after, "mediary-a", hop, source)
        assert c1 - c0 == n, f"{hop}: {c1 - c0} observations, want {n}"
        metric_mean_ms = (s1 - s0) / n * 1000
        trailer_mean_ms = statistics.fmean(per_seg[hop])
        assert abs(metric_mean_ms - trailer_mean_ms) < 0.01, (hop, metric_mean_ms, trailer_mean_ms)
    return after


# --------------------------------------------------------------------------
# attribution against ground truth
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_channel(timing_chain):
    ch = make_channel(timing_chain.addr)
    md = [("x-sleep-ms", str(SLEEP_MS))]
    for _ in range(WARMUP):
        unary(ch, metadata=md)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def ground_truth(timing_chain):
    """Measured without sidecars: the service's own latency for the unary and the
    streaming call, and what nghttpx + the relay add (the mediary-a segment)."""
    chain = timing_chain
    md = [("x-sleep-ms", str(SLEEP_MS))]
    service = direct_latency_ms(chain.direct_addr, lambda ch: unary(ch, metadata=md))
    # Sanity checks of the test service (a slow host adds a few ms: 17.8 ms and 14.1 ms here).
    assert SLEEP_MS <= service < SLEEP_MS + 10, f"service itself takes {service} ms"
    wan = direct_latency_ms(chain.calibration_addr, lambda ch: unary(ch, metadata=md)) - service
    # A sanity check of the relay (the tests compare against `wan` as measured, not the
    # setting): it delays both ways, and a slow host adds to that (43.9 ms once for 40 ms).
    assert 2 * chain.wan_delay_ms - 1 <= wan < 2 * chain.wan_delay_ms + 3 * TOLERANCE_MS, f"relay path adds {wan} ms"
    stream = direct_latency_ms(chain.direct_addr, lambda ch: server_stream(ch, STREAM_MD))
    assert 10 <= stream < 20, f"service itself takes {stream} ms to stream"
    return {"unary": service, "wan": wan, "stream": stream}


STREAM_MD = [("x-count", "3"), ("x-size", "64"), ("x-interval-ms", "5")]


def test_unary_attribution(timing_chain, chain_channel, ground_truth):
    chain = timing_chain
    md = [("x-sleep-ms", str(SLEEP_MS))]

    text0 = metrics_text(chain.mediary_a)
    before = {h: seg_stats(text0, "mediary-a", h) for h in HOPS}
    req0 = metric_sum(text0, "insight_requests_total", hop="mediary-a", region="a",
                      service="insight.test.v1.Test", method="Unary", code="OK", source="traffic") or 0
    entries_list = []
    for i in range(UNARY_CALLS):
        resp, call = unary(chain_channel, payload=b"p%d" % i, metadata=md)
        assert resp == b"p%d" % i
        assert md_values(call.initial_metadata(), "insight-chain") == ["gateway-b, mediary-b, mediary-a"]
        entries_list.append(timing_entries(call.trailing_metadata()))
    chain.check_alive()
    per_seg = check_attribution(chain, entries_list, "unary", ground_truth["unary"], SLEEP_MS,
                                ground_truth["wan"])
    after = check_segment_metrics(chain, before, per_seg, UNARY_CALLS)
    req1 = metric_sum(after, "insight_requests_total", hop="mediary-a", region="a",
                      service="insight.test.v1.Test", method="Unary", code="OK", source="traffic")
    assert req1 - req0 == UNARY_CALLS
    # The inner sidecars see the inner part of the chain.
    mb = wait_metric(chain.mediary_b, lambda t: seg_stats(t, "mediary-b", "gateway-b")[0] > 0)
    gb = metrics_text(chain.gateway_b)
    assert seg_stats(mb, "mediary-b", "mediary-b")[0] >= UNARY_CALLS
    assert seg_stats(mb, "mediary-b", "mediary-a")[0] == 0
    assert seg_stats(gb, "gateway-b", "gateway-b")[0] >= UNARY_CALLS
    assert seg_stats(gb, "gateway-b", "mediary-b")[0] == 0


def test_server_stream_attribution(timing_chain, chain_channel, ground_truth):
    chain = timing_chain
    md = STREAM_MD

    text0 = metrics_text(chain.mediary_a)
    before = {h: seg_stats(text0, "mediary-a", h) for h in HOPS}
    labels = dict(hop="mediary-a", service="insight.test.v1.Test", method="ServerStream", source="traffic")
    stream0 = metric_sum(text0, "insight_stream_duration_seconds_count", **labels) or 0
    resp0 = metric_sum(text0, "insight_messages_total", direction="response", **labels) or 0
    reqm0 = metric_sum(text0, "insight_messages_total", direction="request", **labels) or 0
    entries_list = []
    for _ in range(STREAM_CALLS):
        msgs, it = server_stream(chain_channel, md)
        assert [len(m) for m in msgs] == [64, 64, 64]
        assert it.code() == grpc.StatusCode.OK
        entries_list.append(timing_entries(it.trailing_metadata()))
    chain.check_alive()
    per_seg = check_attribution(chain, entries_list, "server-stream", ground_truth["stream"], 10,
                                ground_truth["wan"])
    after = check_segment_metrics(chain, before, per_seg, STREAM_CALLS)
    assert metric_sum(after, "insight_stream_duration_seconds_count", **labels) - stream0 == STREAM_CALLS
    assert metric_sum(after, "insight_messages_total", direction="response", **labels) - resp0 == 3 * STREAM_CALLS
    assert metric_sum(after, "insight_messages_total", direction="request", **labels) - reqm0 == STREAM_CALLS


def test_probe_traffic_is_separate(timing_chain, chain_channel, ground_truth):
    chain = timing_chain
    md = [("x-sleep-ms", str(SLEEP_MS)), ("insight-probe", "1")]
    texts0 = {sc.name: metrics_text(sc) for sc in chain.sidecars}
    ma0 = texts0[chain.mediary_a.name]
    before = {h: seg_stats(ma0, "mediary-a", h, "probe") for h in HOPS}
    traffic_before = {h: seg_stats(ma0, "mediary-a", h, "traffic")[0] for h in HOPS}
    entries_list = []
    for _ in range(PROBE_CALLS):
        _, call = unary(chain_channel, metadata=md)
        entries_list.append(timing_entries(call.trailing_metadata()))
    per_seg = check_attribution(chain, entries_list, "probe", ground_truth["unary"], SLEEP_MS,
                                ground_truth["wan"])
    after = check_segment_metrics(chain, before, per_seg, PROBE_CALLS, source="probe")
    for h in HOPS:
        assert seg_stats(after, "mediary-a", h, "traffic")[0] == traffic_before[h], "probe counted as traffic"
    assert metric_sum(after, "insight_requests_total", hop="mediary-a", method="Unary", code="OK",
                      source="probe") - (metric_sum(ma0, "insight_requests_total", hop="mediary-a",
                                                    method="Unary", code="OK", source="probe") or 0) == PROBE_CALLS
    # Every sidecar on the path sees the probe header and labels it probe.
    for sc, hop in ((chain.mediary_b, "mediary-b"), (chain.gateway_b, "gateway-b")):
        t1 = wait_metric(sc, lambda t: (metric_sum(t, "insight_requests_total", hop=hop, source="probe") or 0)
                         - (metric_sum(texts0[sc.name], "insight_requests_total", hop=hop, source="probe") or 0)
                         >= PROBE_CALLS)
        c0 = metric_sum(texts0[sc.name], "insight_requests_total", hop=hop, source="probe") or 0
        assert metric_sum(t1, "insight_requests_total", hop=hop, source="probe") - c0 == PROBE_CALLS, hop


# --------------------------------------------------------------------------
# request headers: insight-hops, insight-id, traceparent
# --------------------------------------------------------------------------

def test_hops_and_correlation_id(timing_chain, chain_channel):
    got = server_headers(chain_channel)
    ins = insight_headers(got)
    hops = [v for k, v in ins if k == "insight-hops"]
    assert len(hops) == 1, ins
    items = parse_sf_list(hops[0])
    assert [h for h, _ in items] == HOPS
    assert [p.get("region") for _, p in items] == ["a", "b", "b"]
    ts = [p.get("t") for _, p in items]
    assert all(isinstance(t, str) and re.fullmatch(r"[0-9]{16}", t) for t in ts), ts
    t = [int(x) for x in ts]
    now_us = time.time() * 1e6
    assert abs(t[0] - now_us) < 10e6
    # Same host clock: mediary-b stamps one WAN delay (20 ms) after mediary-a.
    assert 20_000 <= t[1] - t[0] < 60_000, t
    assert 0 <= t[2] - t[1] < 20_000, t
    ids = [v for k, v in ins if k == "insight-id"]
    assert len(ids) == 1 and HEX32.match(ids[0]), ins
    assert {k for k, _ in ins} == {"insight-hops", "insight-id"}

    # A client-supplied valid insight-id is kept (and not duplicated).
    mine = "0123456789abcdef0123456789abcdef"
    ins = insight_headers(server_headers(chain_channel, [("insight-id", mine)]))
    assert [v for k, v in ins if k == "insight-id"] == [mine]
    # An invalid one is replaced by a fresh id.
    ins = insight_headers(server_headers(chain_channel, [("insight-id", "not-an-id")]))
    ids = [v for k, v in ins if k == "insight-id"]
    assert len(ids) == 1 and HEX32.match(ids[0]), ins


def exemplar_ids(openmetrics_text, metric_prefix):
    return set(re.findall(r'^' + re.escape(metric_prefix) + r'\S*\{[^}]*\}\s+\S+\s+#\s+\{trace_id="([^"]*)"\}',
                          openmetrics_text, re.M))


def test_traceparent_trace_id_is_the_correlation_id(timing_chain, chain_channel):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    tp = f"00-{trace_id}-00f067aa0ba902b7-01"
    ins = insight_headers(server_headers(chain_channel, [("traceparent", tp)]))
    assert [k for k, _ in ins] == ["insight-hops"], f"no insight-id expected with a traceparent: {ins}"
    # The trace-id shows up as the exemplar of that call's observations on every sidecar.
    _, call = unary(chain_channel, metadata=[("traceparent", tp), ("x-sleep-ms", "1")])
    for sc in timing_chain.sidecars:
        deadline = time.monotonic() + 3
        while True:
            ctype, body = scrape(sc, accept="application/openmetrics-text; version=1.0.0")
            found = trace_id in exemplar_ids(body, "insight_upstream_duration_seconds_bucket")
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ctype.startswith("application/openmetrics-text"), ctype
        assert body.rstrip().endswith("# EOF")
        assert found, f"{sc.name}: trace id not among exemplars"
    # An all-zero trace-id is invalid: an insight-id is added instead.
    bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    ins = insight_headers(server_headers(chain_channel, [("traceparent", bad)]))
    ids = [v for k, v in ins if k == "insight-id"]
    assert len(ids) == 1 and HEX32.match(ids[0]), ins


# --------------------------------------------------------------------------
# strip options
# --------------------------------------------------------------------------

CLIENT_INSIGHT = [("insight-hops", 'edge;region=x;t="1"'), ("insight-id", "0123456789abcdef0123456789abcdef"),
                  ("insight-probe", "1"), ("insight-custom", "v")]


def test_strip_request_headers(hop_procs):
    srv = hop_procs.grpc_server()
    inner = hop_procs.sidecar(srv.port, "gateway", "g", ["--strip-request-headers"])
    outer = hop_procs.sidecar(inner.port, "edge", "e")
    for sc in (inner, outer):
        ch = make_channel(sc.addr)
        try:
            got = server_headers(ch, CLIENT_INSIGHT)
            assert insight_headers(got) == [], f"via {sc.name}: {insight_headers(got)}"
            # The call still takes part in timing on the way back.
            _, call = unary(ch, metadata=[("x-sleep-ms", "1")])
            hops = [e["hop"] for e in timing_entries(call.trailing_metadata())]
            assert hops == (["gateway"] if sc is inner else ["gateway", "edge"])
        finally:
            ch.close()


def test_strip_response_timing(hop_procs):
    srv = hop_procs.grpc_server()
    inner = hop_procs.sidecar(srv.port, "gateway", "g")
    outer = hop_procs.sidecar(inner.port, "edge", "e", ["--strip-response-timing"])
    ch = make_channel(outer.addr)
    try:
        text0 = metrics_text(outer)
        resp, call = unary(ch, b"hello", metadata=[("x-echo-a", "1"), ("x-trail-b", "2")])
        assert resp == b"hello"
        init, trail = call.initial_metadata(), call.trailing_metadata()
        assert not [m for m in init if m.key.startswith("insight-")], init
        assert not [m for m in trail if m.key.startswith("insight-")], trail
        assert md_values(init, "x-echo-a") == ["1"] and md_values(trail, "x-trail-b") == ["2"]
        # Server streaming and error statuses too.
        msgs, it = server_stream(ch, [("x-count", "2"), ("x-size", "8")])
        assert len(msgs) == 2
        assert not [m for m in it.trailing_metadata() if m.key.startswith("insight-")]
        with pytest.raises(grpc.RpcError) as err:
            unary(ch, metadata=[("x-status-code", "5"), ("x-status-message", "gone")])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert not [m for m in err.value.trailing_metadata() if m.key.startswith("insight-")]
        assert not [m for m in err.value.initial_metadata() if m.key.startswith("insight-")]
        # The stripping sidecar still measures: both segments recorded for the first call.
        text1 = wait_metric(outer, lambda t: (metric_sum(t, SEG + "_count", hop="edge", segment="gateway",
                                                         next="service") or 0) >= 3)
        for seg, nxt in (("edge", "gateway"), ("gateway", "service")):
            c0 = metric_sum(text0, SEG + "_count", hop="edge", segment=seg, next=nxt) or 0
            assert metric_sum(text1, SEG + "_count", hop="edge", segment=seg, next=nxt) - c0 == 3, seg
    finally:
        ch.close()
    # Without the flag the inner sidecar does send them (sanity check of the setup).
    ch = make_channel(inner.addr)
    try:
        _, call = unary(ch)
        assert [e["hop"] for e in timing_entries(call.trailing_metadata())] == ["gateway"]
    finally:
        ch.close()


# --------------------------------------------------------------------------
# a hop that drops unknown trailer fields
# --------------------------------------------------------------------------

def test_hop_dropping_trailers(hop_procs):
    srv = hop_procs.grpc_server()
    gb = hop_procs.sidecar(srv.port, "gateway-b", "b")
    dropper = hop_procs.trailer_filter(gb.port)
    mb = hop_procs.sidecar(dropper.port, "mediary-b", "b")
    ma = hop_procs.sidecar(mb.port, "mediary-a", "a")
    n = 10
    before = {sc.name: metrics_text(sc) for sc in (ma, mb)}
    ch = make_channel(ma.addr)
    try:
        for i in range(n):
            resp, call = unary(ch, b"x%d" % i, metadata=[("x-trail-keep", "k")])
            assert resp == b"x%d" % i
            assert md_values(call.initial_metadata(), "insight-chain") == ["gateway-b, mediary-b, mediary-a"]
            entries = timing_entries(call.trailing_metadata())
            assert [e["hop"] for e in entries] == ["mediary-b", "mediary-a"]
            assert all(e["dur"] > 0 for e in entries)
            assert md_values(call.trailing_metadata(), "x-trail-keep") == []  # the dropper at work
    finally:
        ch.close()
    assert b"insight-timing" in dropper.dropped, dropper.dropped
    assert not dropper.errors, dropper.errors
    for sc, hop in ((ma, "mediary-a"), (mb, "mediary-b")):
        t1 = wait_metric(sc, lambda t: (metric_sum(t, "insight_requests_total", hop=hop) or 0)
                         - (metric_sum(before[sc.name], "insight_requests_total", hop=hop) or 0) >= n)

        def delta(name, **labels):
            return (metric_sum(t1, name, hop=hop, **labels) or 0) - (metric_sum(before[sc.name], name, hop=hop,
                                                                                **labels) or 0)
        assert delta("insight_timing_chain_incomplete_total") == n, hop
        assert delta("insight_timing_header_errors_total", reason="incomplete_chain") == n, hop
        assert delta("insight_proxy_overhead_seconds_count") == n, hop
        assert delta("insight_requests_total", code="OK") == n, hop


# --------------------------------------------------------------------------
# non-gRPC HTTP/2: insight-timing only when the client asked for trailers
# --------------------------------------------------------------------------

def test_plain_http_trailers_only_with_te(hop_procs, tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"hello world\n" * 100)
    origin = hop_procs.nghttpd(tmp_path)
    origin_t = hop_procs.nghttpd(tmp_path, ["--trailer=x-origin: yes"])
    base = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/hello.txt")]
    for up in (origin, origin_t):
        sc = hop_procs.sidecar(up.port, "web", "w")
        for te in (False, True):
            headers, body, trailers = h2_request(sc.port, base + ([("te", "trailers")] if te else []))
            h = dict(headers)
            assert h[":status"] == "200" and body == b"hello world\n" * 100
            assert h.get("insight-chain") == "web"
            names = [k for k, _ in trailers or []]
            if up is origin_t:
                assert "x-origin" in names, trailers
            if te:
                entries = parse_sf_list(dict(trailers)["insight-timing"])
                assert [e[0] for e in entries] == ["web"]
                assert entries[0][1]["dur"] >= 0 and entries[0][1]["self"] >= 0
            else:
                assert "insight-timing" not in names, f"te absent but got trailers {trailers}"
        text = metrics_text(sc)
        assert metric_sum(text, "insight_requests_total", hop="web", service="http", method="/hello.txt",
                          code="200") == 2


def test_plain_http_through_a_chain_without_te(hop_procs, tmp_path):
    """Plain HTTP without `te: trailers` through two sidecars: no hop adds `insight-timing`, so
    the outer one has a chain without entries. That is by design: no incomplete-chain error, and
    no segment charged to the outer hop as if it were the innermost one, also when it strips the
    timing fields for its client (a hostile tester saw edge->service recorded with the inner
    hop's time under --strip-response-timing)."""
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    origin = hop_procs.nghttpd(tmp_path)
    inner = hop_procs.sidecar(origin.port, "inner", "i")
    base = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/hello.txt")]
    n = 5
    for strip in (False, True):
        outer = hop_procs.sidecar(inner.port, "outer", "o", ["--strip-response-timing"] if strip else None)
        for _ in range(n):
            headers, body, trailers = h2_request(outer.port, base)
            assert dict(headers)[":status"] == "200" and body == b"hello\n"
            assert ("insight-chain" in dict(headers)) == (not strip), headers
        text = wait_metric(outer, lambda t: (metric_sum(t, "insight_requests_total", hop="outer", code="200")
                                             or 0) >= n)
        assert (metric_sum(text, "insight_timing_chain_incomplete_total", hop="outer") or 0) == 0, strip
        assert not header_errors(outer, "outer").get("incomplete_chain"), strip
        assert (metric_sum(text, SEG + "_count", hop="outer", segment="outer", next="service") or 0) == 0, strip
        # With te: trailers the chain is complete and split as usual.
        headers, _, trailers = h2_request(outer.port, base + [("te", "trailers")])
        text = wait_metric(outer, lambda t: (metric_sum(t, SEG + "_count", hop="outer", segment="inner",
                                                        next="service") or 0) >= 1)
        assert metric_sum(text, SEG + "_count", hop="outer", segment="outer", next="inner") == 1, strip
        assert ("insight-timing" in dict(trailers or [])) == (not strip), trailers


# --------------------------------------------------------------------------
# hostile timing headers
# --------------------------------------------------------------------------

GRPC_REQ = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
            (":path", TEST_SERVICE + "Unary"), ("content-type", "application/grpc"), ("te", "trailers")]
EMPTY_MSG = b"\x00\x00\x00\x00\x00"


def grpc_via(port, extra=()):
    headers, body, trailers = h2_request(port, GRPC_REQ + list(extra), EMPTY_MSG)
    assert dict(headers)[":status"] == "200", headers
    assert trailers and dict(trailers).get("grpc-status") == "0", trailers
    return headers, body, trailers


def header_errors(sc, hop):
    text = metrics_text(sc)
    return {lab["reason"]: v for n, lab, v in __import__("conftest").parse_metrics(text)
            if n == "insight_timing_header_errors_total" and lab.get("hop") == hop}


def test_hostile_insight_hops(hop_procs):
    up = hop_procs.fake_grpc_upstream()
    sc = hop_procs.sidecar(up.port, "edge", "e")
    many = ", ".join(f'h{i};region=r;t="{i}"' for i in range(100))
    twenty = ", ".join(f"h{i};region=r" for i in range(20))
    cases = [
        # (insight-hops value, expected reasons, expected forwarded hop names)
        ('"(((', {"malformed"}, ["edge"]),
        ("a" * 10240, {"too_large"}, ["edge"]),
        (", ".join(["x;region=r"] * 600), {"too_large"}, ["edge"]),
        # At the hop limit the sidecar does not append; whether it forwards the
        # header as received or only the 32 entries it parsed is not specified.
        (many, {"too_many_entries", "hop_limit"}, None),
        (twenty, {"hop_limit"}, [f"h{i}" for i in range(20)]),
        ("a;region=?1, (b c), ok;region=r", {"invalid_item"}, ["ok", "edge"]),
    ]
    for value, reasons, forwarded in cases:
        e0 = header_errors(sc, "edge")
        grpc_via(sc.port, [("insight-hops", value)])
        e1 = header_errors(sc, "edge")
        grew = {r for r in e1 if e1[r] > e0.get(r, 0)}
        assert grew == reasons, f"{value[:40]!r}: errors grew for {grew}, want {reasons}"
        seen = [v for k, v in up.requests[-1] if k == "insight-hops"]
        assert len(seen) == 1, seen
        names = [h for h, _ in parse_sf_list(seen[0])]
        if forwarded is None:
            assert "edge" not in names and names[:32] == [f"h{i}" for i in range(32)], names
        else:
            assert names == forwarded, value[:40]
    assert sc.alive()
    # Ordinary traffic still works afterwards.
    _, _, trailers = grpc_via(sc.port)
    assert [h for h, _ in parse_sf_list(dict(trailers)["insight-timing"])] == ["edge"]


def test_hostile_insight_timing_from_upstream(hop_procs):
    up = hop_procs.fake_grpc_upstream()
    sc = hop_procs.sidecar(up.port, "edge", "e")
    valid40 = ", ".join(f"h{i};dur=1.5;self=0.1" for i in range(40))
    cases = [
        # (insight-timing trailer, insight-chain header, expected reasons)
        ('"(((', None, {"malformed"}),
        ("x;dur=1;self=0, " * 300 + "x;dur=1;self=0", None, {"too_large"}),
        (valid40, None, {"too_many_entries"}),
        ("x;dur=-1;self=0", None, {"invalid_item"}),
        ("x;dur=1", None, {"invalid_item"}),
        ("inner;dur=1;self=0.1", "a, b, inner", {"incomplete_chain"}),
    ]
    for timing, chain, reasons in cases:
        up.timing, up.chain = timing, chain
        inc0 = metric_sum(metrics_text(sc), "insight_timing_chain_incomplete_total", hop="edge")
        e0 = header_errors(sc, "edge")
        headers, _, trailers = grpc_via(sc.port)
        e1 = header_errors(sc, "edge")
        grew = {r for r in e1 if e1[r] > e0.get(r, 0)}
        assert grew == reasons, f"{timing[:40]!r}: errors grew for {grew}, want {reasons}"
        # The sidecar's own entry is always last.
        entries = parse_sf_list(dict(trailers)["insight-timing"])
        assert entries[-1][0] == "edge" and entries[-1][1]["dur"] >= 0, entries[-3:]
        inc1 = metric_sum(metrics_text(sc), "insight_timing_chain_incomplete_total", hop="edge")
        assert inc1 - inc0 == (1 if "incomplete_chain" in reasons else 0)
    assert sc.alive()
