"""Upstream faults the proxy must make visible, found by breaking the stream bridge (issue 11).

1. An h2c upstream that accepts TCP but never sends SETTINGS: ``connect_timeout`` covers the
   HTTP/2 handshake, so the waiting call gets UNAVAILABLE naming the cause within it, the
   attempt is counted as a connect error and the connection does not linger.
2. An upstream that sends DATA on a stream it never answered (a connection error nghttp2
   handles on its own with GOAWAY): counted in ``insight_protocol_errors_total{side="upstream"}``
   and logged, and the sidecar serves the next call on a new connection.
"""

import socket
import threading
import time

import grpc

import h2raw as r
from bridge_peers import own_channel
from conftest import metric_sum, metrics_text, start_config_sidecar, tail

UNARY = "/insight.test.v1.Test/Unary"


class _Listener:
    """A TCP listener on loopback whose accepted connections are handled by `serve(conn)`."""

    def __init__(self, serve):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.serve = serve
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def _silent(conn):
    """Reads whatever comes and never answers."""
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def _read_frames(conn, buf: bytearray):
    """Yields (type, flags, stream) of complete frames after the client preface."""
    while True:
        while len(buf) >= 9:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            del buf[: 9 + length]
            yield ftype, flags, stream
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf.extend(chunk)


def _data_before_headers(conn):
    """Sends SETTINGS, then answers the first request with DATA and no HEADERS."""
    try:
        buf = bytearray()
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        while len(buf) < len(preface):
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf.extend(chunk)
        del buf[: len(preface)]
        conn.sendall(r.settings())
        for ftype, flags, stream in _read_frames(conn, buf):
            if ftype == 0x4 and not flags & 0x1:
                conn.sendall(r.settings(ack=True))
            if ftype == 0x1:
                conn.sendall(r.data(stream, b"\0\0\0\0\0", end_stream=True))
    except OSError:
        pass


def _unary(port: int, timeout: float):
    with own_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(UNARY)
        try:
            call(b"", timeout=timeout)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""


def test_upstream_without_settings_fails_within_connect_timeout():
    up = _Listener(_silent)
    sc = None
    try:
        sc = start_config_sidecar(
            {"upstream": up.port, "hop": "silent", "region": "r", "connect_timeout": "1s",
             "log_level": "debug"}, name="sidecar-nosettings")
        t0 = time.monotonic()
        code, details = _unary(sc.port, timeout=8)
        took = time.monotonic() - t0
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert "no SETTINGS" in details, details
        assert took < 3.0, f"answered after {took:.1f}s with connect_timeout 1s"
        text = metrics_text(sc)
        assert metric_sum(text, "insight_upstream_connect_errors_total") >= 1
        deadline = time.monotonic() + 3
        while metric_sum(metrics_text(sc), "insight_upstream_connections_active") != 0:
            assert time.monotonic() < deadline, "the silent connection lingers"
            time.sleep(0.1)
        assert metric_sum(metrics_text(sc), "insight_streams_active") == 0
    finally:
        if sc:
            sc.stop()
        up.close()


def test_upstream_protocol_error_is_counted_and_logged():
    up = _Listener(_data_before_headers)
    sc = None
    try:
        sc = start_config_sidecar(
            {"upstream": up.port, "hop": "bad", "region": "r", "log_level": "info"},
            name="sidecar-upstream-proto")
        before = metric_sum(metrics_text(sc), "insight_protocol_errors_total", side="upstream") or 0
        code, details = _unary(sc.port, timeout=5)
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        deadline = time.monotonic() + 3
        while True:
            text = metrics_text(sc)
            after = metric_sum(text, "insight_protocol_errors_total", side="upstream") or 0
            if after == before + 1:
                break
            assert time.monotonic() < deadline, f"upstream protocol errors {before} -> {after}"
            time.sleep(0.1)
        assert "upstream broke the protocol" in tail(sc.log, 200)
        assert metric_sum(metrics_text(sc), "insight_streams_active") == 0
    finally:
        if sc:
            sc.stop()
        up.close()
