"""Fault handling of the sidecar: dead upstream, upstream crash mid-stream,
graceful SIGTERM drain, admin endpoints/metrics. Sidecar-only."""

import re
import shutil
import signal
import subprocess
import threading
import time

import grpc
import pytest

from conftest import free_port, http_get, make_channel, metric_sum, parse_metrics, tcp_connectable
from test_grpc import digest, method, new_tag, unary, wait_stats


def _stream(ch, md, timeout=30.0):
    it = ch.unary_stream(method("ServerStream"))(b"", metadata=md, timeout=timeout)
    got = []
    try:
        for msg in it:
            got.append(msg)
    except grpc.RpcError:
        pass
    return it.code(), it.details(), got


def test_upstream_down(procs):
    dead = free_port()  # nothing listens here
    sc = procs.sidecar(dead)
    status, body = http_get(sc.admin_port, "/healthz")
    assert status == 200
    status, body = http_get(sc.admin_port, "/readyz")
    assert status == 503, f"/readyz with unreachable upstream: {status} {body!r}"

    ch = make_channel(sc.addr)
    try:
        start = time.monotonic()
        out = unary(ch, b"hello", timeout=8)
        elapsed = time.monotonic() - start
    finally:
        ch.close()
    assert out.code == grpc.StatusCode.UNAVAILABLE, out
    assert "upstream" in out.details.lower(), out.details
    assert elapsed < 5.0, f"took {elapsed:.2f}s"

    if shutil.which("nghttp"):
        res = subprocess.run(["nghttp", "-v", f"http://{sc.addr}/anything"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        text = res.stdout.decode("utf-8", "replace")
        statuses = re.findall(r"recv \(stream_id=\d+\) :status: (\d+)", text)
        assert statuses and statuses[0] in ("502", "503"), text
    assert sc.alive(), "sidecar died while upstream was down"


def test_upstream_killed_mid_stream(procs):
    srv = procs.grpc_server()
    sc = procs.sidecar(srv.port)
    ch = make_channel(sc.addr)
    try:
        md = [("x-count", "50"), ("x-size", "100"), ("x-interval-ms", "100")]
        it = ch.unary_stream(method("ServerStream"))(b"", metadata=md, timeout=30)
        assert len(next(it)) == 100
        srv.kill()  # SIGKILL
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            for _ in it:
                pass
        elapsed = time.monotonic() - start
        assert elapsed < 5.0, f"error surfaced only after {elapsed:.2f}s"
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), \
            (e.value.code(), e.value.details())

        # upstream comes back on the same port: the same sidecar (and the same
        # client connection) must work again.
        procs.grpc_server(port=srv.port)
        out = unary(ch, b"again", timeout=5)
        assert out.code == grpc.StatusCode.OK, out
        assert out.responses == (digest(b"again"),)
    finally:
        ch.close()
    assert sc.alive()


def test_sigterm_drains_in_flight_streams(procs, grpc_server):
    drain = 5.0
    sc = procs.sidecar(grpc_server.port, drain_timeout="5s")
    ch = make_channel(sc.addr)
    tag = new_tag()
    n_calls, n_msgs = 6, 10
    md = [("x-count", str(n_msgs)), ("x-size", "512"), ("x-interval-ms", "100"), ("x-tag", tag)]
    results = [None] * n_calls

    def worker(i):
        results[i] = _stream(ch, md)

    try:
        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_calls)]
        for t in threads:
            t.start()
        stats = wait_stats(f"127.0.0.1:{grpc_server.port}", tag, lambda s: s["started"].get("ServerStream") == n_calls)
        assert stats["started"].get("ServerStream") == n_calls, stats
        time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))

        term_at = time.monotonic()
        sc.signal(signal.SIGTERM)
        try:
            rc = sc.popen.wait(timeout=drain + 2)
        except subprocess.TimeoutExpired:
            rc = None
        exit_after = time.monotonic() - term_at
        for t in threads:
            t.join(10)
    finally:
        ch.close()

    for i, (code, details, got) in enumerate(results):
        assert code == grpc.StatusCode.OK, f"call {i}: {code} {details!r} after {len(got)} msgs"
        assert len(got) == n_msgs, f"call {i}: {len(got)} messages"
    assert rc == 0, f"sidecar exit code {rc} ({exit_after:.2f}s after SIGTERM)"
    assert exit_after <= drain + 1.0, f"exited {exit_after:.2f}s after SIGTERM"
    assert not tcp_connectable(sc.port), "sidecar still accepts connections after exit"


def test_admin_and_metrics_after_traffic(grpc_sidecar):
    sc = grpc_sidecar
    assert http_get(sc.admin_port, "/healthz")[0] == 200
    status, body = http_get(sc.admin_port, "/readyz")
    assert status == 200, body

    _, before = http_get(sc.admin_port, "/metrics")
    req_before = metric_sum(before, "insight_bytes_total", direction="request") or 0.0
    streams_before = metric_sum(before, "insight_streams_total") or 0.0

    ch = make_channel(sc.addr)
    try:
        for i in range(5):
            out = unary(ch, b"m" * 1000, timeout=10)
            assert out.code == grpc.StatusCode.OK, out
    finally:
        ch.close()

    status, text = http_get(sc.admin_port, "/metrics")
    assert status == 200
    names = {n for n, _, _ in parse_metrics(text)}
    for required in ("insight_streams_total", "insight_downstream_connections_total",
                     "insight_bytes_total", "insight_stream_resets_total"):
        assert required in names, f"{required} missing from /metrics:\n{text[:2000]}"
    streams = metric_sum(text, "insight_streams_total")
    assert streams > 0
    assert streams - streams_before >= 5, (streams_before, streams)
    assert metric_sum(text, "insight_downstream_connections_total") >= 1
    req = metric_sum(text, "insight_bytes_total", direction="request")
    assert req is not None, 'no insight_bytes_total{direction="request"} sample'
    assert req - req_before >= 5 * 1000, (req_before, req)
