"""The admin listener and the access log stay off the proxy's event loops (issue 12).

- An access log whose output nobody reads (a FIFO opened for reading and never read) must not
  stall proxied calls: lines are dropped and counted in `insight_access_log_dropped_total`
  (Docs/operations.md, "Access log").
- A scraper hammering /metrics with many routes registered must not raise the latency of
  proxied calls by more than a bound (Docs/metrics.md, "Admin endpoints").

Both run the sidecar with one event loop, so before this work every line written and every
scrape rendered happened on the only loop the calls use.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time

import grpc
import pytest

from conftest import TEST_SERVICE, make_channel, metrics_text, parse_metrics, start_nghttpd

CALLS = 20000
ROUTES = 128


def _value(text, name):
    return sum(v for n, _, v in parse_metrics(text) if n == name)


def test_an_access_log_nobody_reads_drops_lines_instead_of_stalling_calls(procs, tmp_path):
    h2load = shutil.which("h2load")
    if not h2load:
        pytest.skip("h2load not installed")
    docroot = tmp_path / "htdocs"
    docroot.mkdir()
    (docroot / "small").write_bytes(b"x" * 100)
    upstream = start_nghttpd(docroot)
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    # A reader exists (so the sidecar's open does not wait) but never reads: the pipe's 64 KiB
    # fill after a few hundred lines and every write(2) after that blocks.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sc = procs.sidecar(upstream.port, extra=["--access-log", str(fifo), "--event-loops", "1",
                                                 "--log-level", "info"])
        start = time.monotonic()
        out = subprocess.run([h2load, "-n", str(CALLS), "-c", "4", "-m", "10", "-t", "1",
                              f"http://127.0.0.1:{sc.port}/small"],
                             capture_output=True, text=True, timeout=60).stdout
        elapsed = time.monotonic() - start
        assert f"{CALLS} succeeded" in out, out
        text = metrics_text(sc)
        dropped = _value(text, "insight_access_log_dropped_total")
        print(f"\n{CALLS} calls in {elapsed:.1f} s with an unread access log FIFO, {dropped:.0f} lines dropped")
        # The pipe holds at most 64 KiB of ~300-byte lines and the queue 8,192 lines.
        assert dropped >= CALLS - 8192 - 65536 // 200, text
        assert dropped <= CALLS
        assert 'insight_access_log_dropped_total{hop="test",reason="queue_full"}' in text
        assert elapsed < 30
    finally:
        os.close(reader)
        upstream.kill()


SCRAPER = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
url = sys.argv[1]
while True:
    with opener.open(url, timeout=10) as r:
        r.read()
"""


def _latencies(unary, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        unary(b"x", timeout=10)
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def _p(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def test_a_scrape_storm_does_not_delay_proxied_calls(procs):
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--event-loops", "1", "--log-level", "info"])
    ch = make_channel(sc.addr)
    try:
        for i in range(ROUTES):
            with pytest.raises(grpc.RpcError):
                ch.unary_unary(f"/acme.payments.v1.PaymentService{i:03d}/AuthorizePayment{i:03d}")(b"x", timeout=5)
        size = len(metrics_text(sc).encode())
        unary = ch.unary_unary(TEST_SERVICE + "Unary")
        _latencies(unary, 50)
        quiet = _latencies(unary, 300)
        scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{sc.admin_port}/metrics"])
        try:
            time.sleep(0.5)
            scrapes_before = _value(metrics_text(sc), "insight_build_info")  # the listener answers
            storm = _latencies(unary, 300)
        finally:
            scraper.kill()
            scraper.wait()
    finally:
        ch.close()
    assert scrapes_before == 1
    print(f"\n/metrics {size} bytes; call latency ms quiet p50 {_p(quiet, .5):.2f} p99 {_p(quiet, .99):.2f} "
          f"max {quiet[-1]:.2f}; under a scrape storm p50 {_p(storm, .5):.2f} p99 {_p(storm, .99):.2f} "
          f"max {storm[-1]:.2f}")
    # On the proxy's only loop each scrape held the calls for a whole render; on its own
    # thread the scraper only competes for a CPU.
    assert _p(storm, .5) <= 2 * _p(quiet, .5) + 1.0, (quiet, storm)
    assert statistics.mean(storm) <= 2 * statistics.mean(quiet) + 2.0, (quiet, storm)
