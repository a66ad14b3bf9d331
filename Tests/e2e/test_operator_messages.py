"""What an operator reads: the errors clients get and the log lines, in plain words.

- A refused connect reads "connection refused" in ``grpc-message`` and in the 502 body, with
  the hop name first, never a Swift type dump ("error set", "errno", "NIOConnectionError").
- A TLS hostname mismatch towards the upstream names the TLS failure, not "closed before SETTINGS".
- Logs, once per state change: upstream unreachable at start, then reachable; an upstream
  connection lost with N streams in flight; a drain that times out says how many streams it
  cut, and those streams end with UNAVAILABLE trailers (not a bare TCP close); a second SIGTERM
  ends the drain at once; SIGHUP without TLS is logged and harmless.
"""

import re
import shutil
import signal
import subprocess
import threading
import time

import grpc
import pytest

from conftest import free_port, make_channel, wait_for
from test_grpc import method, unary
from test_tls import pki, start_tls_grpc_server, tls_procs, write_config  # noqa: F401 (fixtures)

DUMPS = ("error set", "errno", "NIOConnectionError", "IOError", "SingleConnectionFailure", "ChannelError")


def _no_dump(text: str):
    for d in DUMPS:
        assert d not in text, f"internal error dump {d!r} in {text!r}"


def _log_lines(sc, needle: str):
    return [line for line in sc.log.read_text(errors="replace").splitlines() if needle in line]


def test_refused_connect_reads_connection_refused(procs):
    dead = free_port()
    sc = procs.sidecar(dead)
    ch = make_channel(sc.addr)
    try:
        out = unary(ch, b"x", timeout=5)
    finally:
        ch.close()
    assert out.code == grpc.StatusCode.UNAVAILABLE, out
    assert out.details.startswith("test: upstream 127.0.0.1:"), out.details
    assert out.details.endswith("unreachable: connection refused"), out.details
    _no_dump(out.details)
    if shutil.which("nghttp"):
        res = subprocess.run(["nghttp", "-d", "/dev/null", f"http://{sc.addr}/plain"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=10)
        body = res.stdout.decode("utf-8", "replace")
        assert "unreachable: connection refused" in body, body
        _no_dump(body)
    # Logged once per distinct cause, not once per call.
    ch = make_channel(sc.addr)
    try:
        for _ in range(5):
            unary(ch, b"x", timeout=5)
    finally:
        ch.close()
    assert len(_log_lines(sc, "cannot connect to upstream")) == 1, sc.log_tail()


def test_upstream_tls_hostname_mismatch_named(pki, tls_procs, tmp_path):  # noqa: F811
    procs, started = tls_procs
    server = start_tls_grpc_server(started, pki.wrong_host)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, upstream_tls={"ca": pki.ca.cert}))])
    ch = make_channel(sc.addr)
    try:
        out = unary(ch, b"x", timeout=5)
    finally:
        ch.close()
    assert out.code == grpc.StatusCode.UNAVAILABLE, out
    assert "TLS handshake failed: the certificate does not match the host name" in out.details, out.details
    assert "before its SETTINGS" not in out.details, out.details
    _no_dump(out.details)


def test_unreachable_at_start_then_reachable(procs):
    port = free_port()
    sc = procs.sidecar(port)
    wait_for(lambda: _log_lines(sc, "upstream unreachable at start"), 10, what="'unreachable at start' logged")
    procs.grpc_server(port=port)
    wait_for(lambda: _log_lines(sc, "upstream reachable"), 10, what="'upstream reachable' logged")
    assert len(_log_lines(sc, "upstream unreachable at start")) == 1


def _streams_in_flight(ch, n, results, timeout=30):
    """Starts n slow server streams; each result is (code, details) once it ends."""
    started = threading.Barrier(n + 1)

    def one(i):
        md = [("x-count", "100"), ("x-size", "10"), ("x-interval-ms", "100")]
        it = ch.unary_stream(method("ServerStream"))(b"", metadata=md, timeout=timeout)
        try:
            first = True
            for _ in it:
                if first:
                    first = False
                    started.wait(10)
        except grpc.RpcError:
            pass
        results[i] = (it.code(), it.details())

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    started.wait(10)
    return threads


def test_upstream_lost_with_streams_in_flight_logged(procs):
    srv = procs.grpc_server()
    sc = procs.sidecar(srv.port)
    ch = make_channel(sc.addr)
    results = {}
    try:
        threads = _streams_in_flight(ch, 3, results)
        srv.kill()
        for t in threads:
            t.join(10)
    finally:
        ch.close()
    assert len(results) == 3
    for code, details in results.values():
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert "lost the connection to upstream" in (details or ""), details
        _no_dump(details or "")
    lines = _log_lines(sc, "upstream connection lost with streams in flight")
    assert len(lines) == 1 and "streams=3" in lines[0], sc.log_tail()


def test_drain_timeout_ends_streams_with_unavailable(procs):
    srv = procs.grpc_server()
    sc = procs.sidecar(srv.port, drain_timeout="1s")
    ch = make_channel(sc.addr)
    results = {}
    try:
        threads = _streams_in_flight(ch, 2, results)
        sc.signal(signal.SIGTERM)
        for t in threads:
            t.join(10)
    finally:
        ch.close()
    assert sc.popen.wait(10) == 0
    assert len(results) == 2
    for code, details in results.values():
        # A bare TCP close would read "Socket closed" / "Connection reset" (UNAVAILABLE too):
        # the message must be the sidecar's own.
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert "test: sidecar shutting down: drain timeout of 1s passed" in (details or ""), details
    lines = _log_lines(sc, "drain ended with streams in flight")
    assert len(lines) == 1 and "streams=2" in lines[0] and "connections=1" in lines[0], sc.log_tail()


def test_second_sigterm_ends_the_drain_now(procs):
    srv = procs.grpc_server()
    sc = procs.sidecar(srv.port, drain_timeout="30s")
    ch = make_channel(sc.addr)
    results = {}
    try:
        threads = _streams_in_flight(ch, 1, results)
        sc.signal(signal.SIGTERM)
        wait_for(lambda: _log_lines(sc, "signal received, draining"), 10, what="drain started")
        start = time.monotonic()
        sc.signal(signal.SIGTERM)
        assert sc.popen.wait(10) == 0
        elapsed = time.monotonic() - start
        for t in threads:
            t.join(10)
    finally:
        ch.close()
    assert elapsed < 5, f"a second SIGTERM took {elapsed:.1f}s to stop the sidecar"
    assert _log_lines(sc, "second signal received"), sc.log_tail()
    code, details = results[0]
    assert code == grpc.StatusCode.UNAVAILABLE and "stopped by a second signal" in (details or ""), (code, details)


def test_sighup_without_tls_is_logged_and_harmless(procs, grpc_server):
    sc = procs.sidecar(grpc_server.port)
    sc.signal(signal.SIGHUP)
    wait_for(lambda: _log_lines(sc, "SIGHUP received: no TLS certificates configured"), 10, what="SIGHUP logged")
    assert sc.alive()
    ch = make_channel(sc.addr)
    try:
        assert unary(ch, b"x", timeout=5).code == grpc.StatusCode.OK
    finally:
        ch.close()
    assert re.search(r"signal=SIGHUP|SIGHUP received", sc.log.read_text())


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_flat_while_the_upstream_refuses_connections(procs):
    """Every call to a dead upstream is a refused connect; each used to leave its connection
    and nghttp2 session behind (the pipeline kept the handler: no channelInactive for a channel
    that never became active), about 14 kB per call, for as long as the upstream was down."""
    sc = procs.sidecar(free_port(), extra=["--event-loops", "1"])
    ch = make_channel(sc.addr)
    fn = ch.unary_unary(method("Unary"))

    def calls(n):
        for _ in range(n):
            try:
                fn(b"x", timeout=5)
            except grpc.RpcError:
                pass

    try:
        calls(300)  # warm up: allocator arenas, metric series, the status ring
        before = _rss_kb(sc.popen.pid)
        calls(1500)
        grown = _rss_kb(sc.popen.pid) - before
    finally:
        ch.close()
    assert grown < 6_000, f"RSS grew {grown} kB over 1500 refused calls (was ~22,000 kB before the fix)"


def _call_with_timeout_header(addr: str, value: str):
    """One gRPC call over a raw h2 connection with ``grpc-timeout: value``; returns the
    response's header fields (Trailers-Only: status and grpc-status together)."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/insight.test.v1.Test/Unary"),
                       (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers"),
                       ("grpc-timeout", value)])
    c.send_data(1, b"\x00\x00\x00\x00\x01x", end_stream=True)
    s.sendall(c.data_to_send())
    fields = {}
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for event in c.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields.update(dict(event.headers))
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return fields
            s.sendall(c.data_to_send())
    finally:
        s.close()
    return fields


@pytest.mark.parametrize("value", ["abc", "", "1.5S", "123456789m", "-100m", "1s"])
def test_malformed_grpc_timeout_answered_here_and_other_clients_unaffected(procs, grpc_server, value):
    """A malformed ``grpc-timeout`` is answered by the sidecar (INTERNAL, as gRPC servers do) and
    never forwarded: grpc-core held one against every later call on the shared upstream
    connection, so one bad client broke every other client's deadline calls."""
    sc = procs.sidecar(grpc_server.port, extra=["--event-loops", "1"])
    ch = make_channel(sc.addr)
    try:
        assert unary(ch, b"x", timeout=5).code == grpc.StatusCode.OK
        fields = _call_with_timeout_header(sc.addr, value)
        assert fields.get("grpc-status") == "13", fields
        assert "invalid grpc-timeout" in fields.get("grpc-message", ""), fields
        assert fields["grpc-message"].startswith("test: "), fields
        outcomes = [unary(ch, b"x", timeout=5).code for _ in range(20)]
    finally:
        ch.close()
    assert outcomes == [grpc.StatusCode.OK] * 20, outcomes
    # Valid values still go through with their deadline.
    assert _call_with_timeout_header(sc.addr, "5S").get("grpc-status") == "0"


def test_more_causes_in_plain_words(procs, probe_procs, tmp_path):
    """Causes the first hostile review still found as type dumps or raw library text."""
    import socket

    from conftest import require_sidecar

    # An upstream host that does not resolve.
    sc = procs.sidecar(1, extra=["--upstream", "doesnotexist.invalid:80"])
    ch = make_channel(sc.addr)
    try:
        out = unary(ch, b"x", timeout=10)
    finally:
        ch.close()
    assert out.code == grpc.StatusCode.UNAVAILABLE, out
    assert "unreachable: cannot resolve doesnotexist.invalid" in out.details, out.details
    _no_dump(out.details)
    assert "SocketAddressError" not in out.details and "error -" not in out.details, out.details

    # An upstream that answers HTTP/1.1.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def http1():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                conn.recv(65536)  # the preface: read it, so the close is a FIN, not a reset
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                time.sleep(0.2)
            except OSError:
                pass
            conn.close()

    threading.Thread(target=http1, daemon=True).start()
    try:
        sc = procs.sidecar(port)
        ch = make_channel(sc.addr)
        try:
            out = unary(ch, b"x", timeout=10)
        finally:
            ch.close()
    finally:
        listener.close()
    assert out.code == grpc.StatusCode.UNAVAILABLE, out
    assert out.details.endswith("unreachable: it does not speak HTTP/2 (no SETTINGS frame first)"), out.details

    # A port in use at start.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = subprocess.run([str(require_sidecar()), "run", "--upstream", "127.0.0.1:1", "--hop", "x", "--region", "r",
                            "--listen", f"127.0.0.1:{busy.getsockname()[1]}", "--admin", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=20)
    finally:
        busy.close()
    assert r.returncode == 1, r
    assert "cannot start: listen on" in r.stderr and r.stderr.rstrip().endswith("address already in use"), r.stderr
    _no_dump(r.stderr)

    # A probe target on a closed port is named as a probe target, not as the upstream.
    server = probe_procs.grpc_server()
    dead = free_port()
    targets = tmp_path / "targets.yaml"
    targets.write_text(f'- {{name: gone, address: "127.0.0.1:{dead}", region: a}}\n')
    sc = probe_procs.sidecar({"upstream": server.port, "hop": "prober", "region": "a",
                              "probes": {"interval": "200ms", "timeout": "1s", "targets_file": str(targets)}})
    wait_for(lambda: _log_lines(sc, "cannot connect to probe target"), 10, what="probe target connect failure logged")
    assert not _log_lines(sc, "cannot connect to upstream"), sc.log_tail()
    line = _log_lines(sc, "cannot connect to probe target")[0]
    assert f"probe target 127.0.0.1:{dead} unreachable: connection refused" in line, line
