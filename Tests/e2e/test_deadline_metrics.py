"""Calls that end at their deadline are DEADLINE_EXCEEDED and are timed like every other call.

grpcio clients with a `grpc-timeout` against grpc_server.py handlers that sleep past it: the
client resets the stream when its deadline passes, and the sidecar must count the call as
DEADLINE_EXCEEDED (not CANCELLED), observe it in the duration and segment histograms with the
time it took, and write `dur_ms` for it in the access log (Docs/metrics.md, "How calls that
ended are observed").
"""

import json
import time
from concurrent import futures

import grpc

from conftest import LOG_DIR, TEST_SERVICE, make_channel, metric_sum, metrics_text

UNARY = TEST_SERVICE + "Unary"
LABELS = {"service": "insight.test.v1.Test", "method": "Unary", "source": "traffic"}


def _call(ch, sleep_ms, timeout):
    fn = ch.unary_unary(UNARY)
    try:
        fn(b"x", metadata=[("x-sleep-ms", str(sleep_ms))], timeout=timeout)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _burst(addr, calls):
    """Runs (sleep_ms, timeout) calls in parallel on one channel; returns their client-side codes."""
    ch = make_channel(addr)
    try:
        with futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(lambda c: _call(ch, *c), calls))
    finally:
        ch.close()


def _settled(sc):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = metrics_text(sc)
        if metric_sum(text, "insight_streams_active") == 0:
            return text
        time.sleep(0.05)
    raise AssertionError("streams still active 5 s after the burst")


def _last_log_line(log, timeout=5.0):
    """The access log's last line, once there is one: lines are written by the log's own
    thread after the stream ended, so the file may still be empty when the metrics say no
    stream is active."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        if lines or time.monotonic() >= deadline:
            assert lines, f"no access-log line within {timeout} s"
            return json.loads(lines[-1])
        time.sleep(0.05)


def _codes(text):
    return {code: metric_sum(text, "insight_requests_total", code=code, **LABELS) or 0
            for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED")}


def test_deadline_calls_are_counted_and_timed(procs):
    server = procs.grpc_server()
    log = LOG_DIR / f"access-deadline-{time.time_ns()}.log"
    sc = procs.sidecar(server.port, extra=["--access-log", str(log)])
    calls = [(2000, 0.3)] * 10 + [(0, 5.0)] * 10
    got = _burst(sc.addr, calls)
    assert got.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 10, got
    assert got.count(grpc.StatusCode.OK) == 10, got
    text = _settled(sc)

    assert _codes(text) == {"OK": 10, "DEADLINE_EXCEEDED": 10, "CANCELLED": 0}
    assert metric_sum(text, "insight_upstream_duration_seconds_count", **LABELS) == 20
    # The 10 deadline calls each took at least ~300 ms (the 5 % allowance is the sidecar's).
    assert metric_sum(text, "insight_upstream_duration_seconds_sum", **LABELS) >= 10 * 0.28
    # Time to first byte only where a first byte came: grpcio sends the headers of a unary
    # response with the response, so a deadline call has one only when the server's own
    # deadline timer answered (a Trailers-Only DEADLINE_EXCEEDED) before the client's reset
    # arrived, a race the test does not control (seen in 1 run of 6, baseline build too).
    ttfb = metric_sum(text, "insight_upstream_ttfb_seconds_count", **LABELS)
    assert 10 <= ttfb <= 20, ttfb
    # The same race decides the segment: a deadline call the server answered itself has a
    # response end and a complete chain (next="service"), one cut short by the client's reset
    # has none (next="unknown"). Each server-answered deadline call is also one ttfb more.
    answered = ttfb - 10
    seg = "insight_segment_duration_seconds_count"
    assert metric_sum(text, seg, hop="test", segment="test", next="service", source="traffic") == 10 + answered
    assert (metric_sum(text, seg, hop="test", segment="test", next="unknown", source="traffic") or 0) == 10 - answered
    # Every deadline call is in the +Inf bucket but none is under the 250 ms SLO threshold.
    assert (metric_sum(text, "insight_segment_duration_seconds_bucket", next="unknown", le="0.25") or 0) == 0

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < 20:
        time.sleep(0.05)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 20, lines
    assert all("dur_ms" in line for line in lines), [line for line in lines if "dur_ms" not in line]
    late = [line for line in lines if line["code"] == "DEADLINE_EXCEEDED"]
    assert len(late) == 10, lines
    assert all(line["dur_ms"] >= 280 for line in late), late


def test_mixed_burst_timeouts_are_never_cancelled(procs):
    """Every call the client saw time out is DEADLINE_EXCEEDED at the sidecar, in a burst."""
    server = procs.grpc_server()
    sc = procs.sidecar(server.port)
    calls = [(2000, 0.3) if i % 4 == 0 else (20, 5.0) for i in range(120)]
    got = _burst(sc.addr, calls)
    timeouts = got.count(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert timeouts >= 30, got
    text = _settled(sc)
    codes = _codes(text)
    assert codes["CANCELLED"] == 0, codes
    assert codes["DEADLINE_EXCEEDED"] == timeouts, (codes, timeouts)
    assert codes["OK"] == got.count(grpc.StatusCode.OK), codes
    assert metric_sum(text, "insight_upstream_duration_seconds_count", **LABELS) == 120


def test_call_the_sidecar_ended_past_its_deadline_stays_unavailable(procs, tmp_path):
    """A call with ``grpc-timeout: 200m`` whose client does not enforce it, to an upstream that
    never answers and then goes away at 600 ms: the client gets UNAVAILABLE from the sidecar,
    so the sidecar must count UNAVAILABLE (not DEADLINE_EXCEEDED, which would hide the
    upstream's loss as a client deadline)."""
    from bridge_peers import BRIDGE_SERVICE, BridgeUpstream, H2Client, LoopThread, grpc_frame, \
        grpc_request_headers

    lt = LoopThread()
    up = BridgeUpstream(lt).start()
    try:
        log = tmp_path / "access.jsonl"
        sc = procs.sidecar(up.port, extra=["--access-log", str(log)])
        c = H2Client(sc.port)
        # The request never ends, so the upstream never answers it.
        sid = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Hang", [("grpc-timeout", "200m")]),
                        grpc_frame(b"x"), end_stream=False)
        time.sleep(0.6)
        up.close_all(linger=0.0)
        res = c.wait(sid, 5.0)
        c.close()
        assert res.field("grpc-status") == "14", res
        text = _settled(sc)
        labels = {"service": "bridge.v1.Bridge", "method": "Hang", "source": "traffic"}
        assert metric_sum(text, "insight_requests_total", code="UNAVAILABLE", **labels) == 1, text
        assert not metric_sum(text, "insight_requests_total", code="DEADLINE_EXCEEDED", **labels)
        line = _last_log_line(log)
        assert (line["code"], line["end"]) == ("UNAVAILABLE", "upstream_unavailable"), line
    finally:
        up.stop()
        lt.stop()


def test_access_log_has_ttfb_for_a_stream_cut_after_its_headers(procs, tmp_path):
    """A server stream that got its response headers and messages, then hit its deadline: the
    access log's ttfb_ms is there, as insight_upstream_ttfb_seconds counted it."""
    server = procs.grpc_server()
    log = tmp_path / "access.jsonl"
    sc = procs.sidecar(server.port, extra=["--access-log", str(log)])
    ch = make_channel(sc.addr)
    md = [("x-count", "100"), ("x-size", "10"), ("x-interval-ms", "100")]
    it = ch.unary_stream(TEST_SERVICE + "ServerStream")(b"", metadata=md, timeout=0.5)
    got = 0
    try:
        for _ in it:
            got += 1
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    ch.close()
    assert got >= 1
    _settled(sc)
    line = _last_log_line(log)
    assert line["code"] == "DEADLINE_EXCEEDED" and line["method"] == "ServerStream", line
    assert "ttfb_ms" in line and 0 <= line["ttfb_ms"] < line["dur_ms"], line
