"""`/readyz` means ready: an HTTP/2 connection to the upstream (TLS included) acknowledges SETTINGS.

Readiness used to open a TCP connection only, so it answered 200 while every call failed: an
upstream with an untrusted or expired certificate, one that is frozen (SIGSTOP), one that takes
TCP and never speaks HTTP/2. See Docs/operations.md, "Health checks".
"""

import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import free_port, http_get, make_channel, metric_sum, metrics_text
from test_tls import pki, start_tls_grpc_server, tls_procs, unary, write_config  # noqa: F401

# ProxyServer.readinessDeadline: 1 s (connect_timeout is 5 s in these tests).
DEADLINE = 1.0


def readyz(sc, timeout: float = 5.0):
    return http_get(sc.admin_port, "/readyz", timeout=timeout)


def wait_status(sc, status: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = readyz(sc)
        if last[0] == status:
            return last
        time.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}; last {last}")


def test_healthy_upstream_ready(procs):
    server = procs.grpc_server()
    # One loop: readiness checks the first loop's pool, the one this call uses too.
    sc = procs.sidecar(server.port, extra=["--event-loops", "1"])
    status, body = readyz(sc)
    assert status == 200, body
    assert "acknowledged an HTTP/2 SETTINGS frame" in body, body
    # The check uses the pool's connection: calls reuse it, and readiness does not add one.
    ch = make_channel(sc.addr)
    assert unary(ch) == b"hello"
    ch.close()
    # Checks on a connection without calls, as a kubelet makes them: grpcio answers four
    # PINGs like that with GOAWAY ENHANCE_YOUR_CALM (too_many_pings); SETTINGS it acknowledges.
    for _ in range(8):
        assert readyz(sc)[0] == 200
    assert metric_sum(metrics_text(sc), "insight_upstream_connections_total") == 1
    assert "upstream GOAWAY" not in sc.log.read_text()
    status, body = http_get(sc.admin_port, "/healthz")
    assert (status, body) == (200, "ok\n")


@pytest.mark.parametrize("which,words", [("untrusted", "the certificate is not trusted"),
                                         ("expired", "the certificate has expired")])
def test_bad_upstream_certificate_not_ready(which, words, pki, tls_procs, tmp_path):  # noqa: F811
    procs, started = tls_procs
    server = start_tls_grpc_server(started, getattr(pki, which))
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, upstream_tls={"ca": pki.ca.cert}))])
    status, body = readyz(sc)
    assert status == 503, body
    assert body.startswith("not ready: ") and "TLS handshake failed" in body and words in body, body


def test_good_upstream_certificate_ready(pki, tls_procs, tmp_path):  # noqa: F811
    procs, started = tls_procs
    server = start_tls_grpc_server(started, pki.server)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, upstream_tls={"ca": pki.ca.cert}))])
    status, body = readyz(sc)
    assert status == 200, body


def test_frozen_upstream_not_ready_within_deadline_and_back_after_sigcont(procs):
    server = procs.grpc_server()
    sc = procs.sidecar(server.port)
    assert readyz(sc)[0] == 200
    server.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        status, body = readyz(sc)
        took = time.monotonic() - t0
        assert status == 503, body
        assert "did not acknowledge an HTTP/2 SETTINGS frame within 1s" in body, body
        assert DEADLINE * 0.9 <= took < DEADLINE + 1.0, took
        print(f"frozen upstream: 503 after {took * 1000:.0f} ms: {body.strip()}")
    finally:
        server.signal(signal.SIGCONT)
    t0 = time.monotonic()
    status, body = wait_status(sc, 200, timeout=5)
    print(f"after SIGCONT: 200 after {(time.monotonic() - t0) * 1000:.0f} ms: {body.strip()}")


def test_frozen_upstream_without_connection_not_ready(procs):
    """Frozen before the first check: TCP connects (the kernel accepts), SETTINGS never come."""
    server = procs.grpc_server()
    server.signal(signal.SIGSTOP)
    try:
        sc = procs.sidecar(server.port)
        t0 = time.monotonic()
        status, body = readyz(sc)
        took = time.monotonic() - t0
        assert status == 503, body
        assert "did not complete the connection" in body, body
        assert took < DEADLINE + 1.0, took
    finally:
        server.signal(signal.SIGCONT)
    wait_status(sc, 200, timeout=10)


def test_tcp_only_upstream_not_ready(procs):
    """A listener that accepts and never speaks HTTP/2 (the old check said ready)."""
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        sc = procs.sidecar(port)
        status, body = readyz(sc)
        assert status == 503, body
    finally:
        stop.set()
        thread.join()
        for s in accepted:
            s.close()
        listener.close()


def test_no_upstream_not_ready(procs):
    sc = procs.sidecar(free_port())
    status, body = readyz(sc)
    assert status == 503, body
    assert "unreachable" in body, body


def test_concurrent_checks_share_one_connection(procs):
    """Many /readyz at once, no connection yet: one upstream connection, one answer for all."""
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--event-loops", "1"])
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda _: readyz(sc), range(32)))
    assert all(status == 200 for status, _ in answers), answers
    connections = metric_sum(metrics_text(sc), "insight_upstream_connections_total")
    print(f"32 concurrent /readyz: {connections:.0f} upstream connection(s)")
    assert connections == 1
