"""What one admin client can cost is bounded (Docs/operations.md, "Admin listener limits").

- A client that pipelines thousands of requests in one write and never reads gets one response
  rendered at a time, only while the socket takes it: the sidecar's RSS stays flat and another
  client's /readyz is answered at once. Before, every response was rendered and queued
  (2,000 x /metrics: +470 MB, /readyz 1.2 s; 50 such connections: 2.2 GB).
- An admin connection without progress (nothing sent, half a request, responses not read) is
  closed after `admin_idle_timeout`; before, it stayed open forever.
- At most 256 admin connections are open; one more closes the oldest, so a client holding
  hundreds of silent connections neither uses up the fds the proxy shares nor locks probes out.
"""

import os
import socket
import subprocess
import time

import grpc
import pytest

from conftest import http_get, make_channel, require_sidecar

ROUTES = 50


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split("kB")[0])


def _register_routes(sc):
    """Calls to ROUTES methods, so /metrics is tens of KiB and the status API has hops to list."""
    with make_channel(sc.addr) as ch:
        for i in range(ROUTES):
            try:
                ch.unary_unary(f"/svc{i}.S/M{i}")(b"", timeout=2)
            except grpc.RpcError:
                pass


def _cpu_goes_idle(pid, within):
    """Whether the process used at most 20 ms of CPU in some 0.5 s within `within` seconds."""
    def ticks():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    deadline = time.monotonic() + within
    last = ticks()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = ticks()
        if now - last <= 2 * os.sysconf("SC_CLK_TCK") // 100:
            return True
        last = now
    return False


def _never_reading_client(port, request, count):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(request * count)
    return s


def _closed_by_peer(s, within):
    """True if the peer closes `s` within `within` seconds (whatever it sent before is drained)."""
    s.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


@pytest.mark.parametrize("path,connections,requests", [
    ("/metrics", 1, 2000),
    ("/api/v1/hops", 1, 2000),
    ("/metrics", 20, 200),
])
def test_pipelining_client_that_never_reads_costs_one_response(procs, path, connections, requests):
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--event-loops", "1"])
    _register_routes(sc)
    status, body = http_get(sc.admin_port, path)
    assert status == 200
    before = _rss_kib(sc.popen.pid)
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    clients = [_never_reading_client(sc.admin_port, request, requests) for _ in range(connections)]
    try:
        # Each connection's first response is rendered at once: 20 of /metrics take most of a
        # second on a debug build on a slow host. Wait until the sidecar's CPU is idle, which
        # it never is while pipelined requests keep being rendered for clients that do not
        # read (2,000 renders of /metrics are tens of seconds of CPU), then time /readyz.
        assert _cpu_goes_idle(sc.popen.pid, within=15), "the sidecar kept working for clients that never read"
        slowest = 0.0
        for _ in range(3):
            time.sleep(1)
            start = time.monotonic()
            status, _ = http_get(sc.admin_port, "/readyz", timeout=5)
            slowest = max(slowest, time.monotonic() - start)
            assert status == 200
        grown = (_rss_kib(sc.popen.pid) - before) / 1024
        print(f"\n{connections} x {requests} pipelined {path} ({len(body)} bytes each), never read:"
              f" RSS +{grown:.1f} MB, slowest /readyz {slowest * 1000:.0f} ms")
        assert grown < 50
        assert slowest < 0.2
    finally:
        for s in clients:
            s.close()


def test_admin_connection_without_progress_is_closed_after_the_idle_timeout(procs):
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--admin-idle-timeout", "1s"])
    silent = socket.create_connection(("127.0.0.1", sc.admin_port))
    half = socket.create_connection(("127.0.0.1", sc.admin_port))
    half.sendall(b"GET /metrics HTTP/1.1\r\nHo")
    unread = _never_reading_client(sc.admin_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 2000)
    # A client that keeps asking stays connected past the timeout.
    busy = socket.create_connection(("127.0.0.1", sc.admin_port))
    busy.settimeout(2)
    start = time.monotonic()
    for _ in range(6):
        busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in busy.recv(4096)
        time.sleep(0.4)
    for s in (silent, half, unread):
        assert _closed_by_peer(s, within=3), "admin connection still open 3 s after a 1 s idle timeout"
        s.close()
    elapsed = time.monotonic() - start
    assert elapsed > 0.9
    busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in busy.recv(4096)
    busy.close()


def _open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_admin_connections_past_the_cap_close_the_oldest(procs):
    server = procs.grpc_server()
    sc = procs.sidecar(server.port)
    fds = _open_fds(sc.popen.pid)
    held = [socket.create_connection(("127.0.0.1", sc.admin_port)) for _ in range(400)]
    try:
        for s in held[:400 - 256]:
            assert _closed_by_peer(s, within=2), "admin connection past the cap of 256 left open"
        time.sleep(0.3)
        grown = _open_fds(sc.popen.pid) - fds
        start = time.monotonic()
        status, _ = http_get(sc.admin_port, "/readyz")
        took = time.monotonic() - start
        print(f"\n400 silent admin connections: sidecar fds +{grown}, /readyz {status} in {took * 1000:.0f} ms")
        assert grown <= 256
        assert status == 200
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("value", ["0s", "-1s", "soon"])
def test_admin_idle_timeout_must_be_a_positive_duration(value):
    out = subprocess.run([str(require_sidecar()), "check-config", "--upstream", "127.0.0.1:1", "--hop", "h",
                          "--region", "r", "--admin-idle-timeout", value],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    assert "admin_idle_timeout" in out.stderr + out.stdout
