#!/usr/bin/env python3
"""Scrape cost and proxied-call latency under a /metrics scrape storm (issue 12).

    python3 Benchmarks/admin_isolation.py BINARY [BINARY ...]

For each sidecar binary (one event loop, as in Benchmarks/run.sh): the time of one GET /metrics
as the client sees it (median and p90 of 50 sequential scrapes, HTTP on loopback included) and
its bytes, at the default `max_routes` (128 routes, ordinary calls: "typical") and after the
worst-case traffic of Tests/e2e/test_metrics_cardinality.py ("worst"); then the latency of
1,000 sequential unary gRPC calls (grpcio, one connection) quiet and while another process
scrapes /metrics in a tight loop.
"""

import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Tests" / "e2e"))

import conftest  # noqa: E402
import grpc  # noqa: E402
from test_metrics_cardinality import _worst_case_traffic  # noqa: E402

SCRAPER = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    with opener.open(sys.argv[1], timeout=10) as r:
        r.read()
"""
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape_times(admin, n=50):
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        with OPENER.open(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
            size = len(r.read())
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.9 * n)], size


def latencies(unary, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        unary(b"x", timeout=10)
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def fmt(xs):
    return (f"p50 {xs[len(xs) // 2]:.3f} p99 {xs[int(0.99 * len(xs))]:.3f} max {xs[-1]:.3f} "
            f"mean {statistics.mean(xs):.3f} ms")


def bench(binary):
    import os
    os.environ["INSIGHT_SIDECAR"] = binary
    server = conftest.start_grpc_server(None)
    sc = conftest.start_sidecar(server.port, extra=["--event-loops", "1", "--log-level", "error"])
    try:
        ch = conftest.make_channel(sc.addr)
        for i in range(128):
            try:
                ch.unary_unary(f"/acme.payments.v1.PaymentService{i:03d}/AuthorizePayment{i:03d}")(b"x", timeout=5)
            except grpc.RpcError:
                pass
        med, p90, size = scrape_times(sc.admin_port)
        print(f"{binary}\n  typical (128 routes): scrape median {med:.0f} us, p90 {p90:.0f} us, {size} bytes")
        unary = ch.unary_unary(conftest.TEST_SERVICE + "Unary")
        latencies(unary, 100)
        quiet = latencies(unary, 1000)
        scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{sc.admin_port}/metrics"])
        time.sleep(0.5)
        storm = latencies(unary, 1000)
        scraper.kill()
        scraper.wait()
        print(f"  calls quiet:         {fmt(quiet)}\n  calls scrape storm:  {fmt(storm)}")
        ch.close()
        _worst_case_traffic(sc.port, 256)
        med, p90, size = scrape_times(sc.admin_port)
        print(f"  worst case (256 long routes, every call shape): scrape median {med:.0f} us, p90 {p90:.0f} us, "
              f"{size} bytes")
    finally:
        sc.kill()
        server.kill()


if __name__ == "__main__":
    for b in sys.argv[1:]:
        bench(b)
