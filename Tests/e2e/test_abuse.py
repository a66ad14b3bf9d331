"""Abuse suite (issue 8): hostile clients and broken upstreams against one sidecar.

For every client-side attack the sidecar must survive (process alive, /healthz 200), the
offending connection must get the right GOAWAY / RST_STREAM or be closed, a well-behaved
grpcio client making unary calls through the same sidecar at the same time must see no
errors, the sidecar's RSS must stay under a bound, and afterwards insight_streams_active
must return to 0 and insight_downstream_connections_active to its baseline.

Upstream faults run against a fake h2 upstream (FaultUpstream below) behind a second sidecar:
RST_STREAM with every error code, GOAWAY below in-flight streams, garbage bytes, and an
upstream slower than the client's deadline.

Every wait is bounded; the whole file is meant to run in well under two minutes.
"""

import asyncio
import socket
import threading
import time
from contextlib import contextmanager
from typing import List

import grpc
import pytest

import h2raw as r
from conftest import (H2ServerBase, _H2Conn, _LoopThread, http_get, make_channel, metric_sum,
                      metrics_text, require_tool, start_config_sidecar, start_grpc_server, start_nghttpd,
                      wait_for, _ALL_PROCS)

UNARY = "/insight.test.v1.Test/Unary"
HEADER_LIMIT = 16384
RESET_BURST = 50
RESET_RATE = 10
MAX_CONTINUATIONS = 8
RSS_GROWTH_MB = 64          # per attack, over the RSS measured right before it
SLOW_READER_GROWTH_MB = 50  # zero-window reader of a 100 MB body

LIMITS = {
    "preface_timeout": "1s",
    "stream_reset_burst": RESET_BURST,
    "stream_reset_rate": RESET_RATE,
    "max_continuations": MAX_CONTINUATIONS,
    "max_header_list_size": HEADER_LIMIT,
    "max_connections": 12000,
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def metric(sc, name: str, **labels) -> float:
    return metric_sum(metrics_text(sc), name, **labels) or 0.0


class RssSampler:
    """Samples the sidecar's VmRSS every 50 ms in a thread; ``peak`` is the maximum seen."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start = rss_mb(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._t.join(2)
        return self.peak - self.start


class GoodClient:
    """A well-behaved grpcio client: unary calls back to back on one channel."""

    def __init__(self, addr: str):
        self.channel = make_channel(addr)
        self.call = self.channel.unary_unary(UNARY)
        self.errors: List[str] = []
        self.ok = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                if self.call(b"ping", timeout=5.0) != b"ping":
                    self.errors.append("wrong payload")
                else:
                    self.ok += 1
            except grpc.RpcError as e:
                self.errors.append(f"{e.code()}: {e.details()}")
            self._stop.wait(0.02)

    def __enter__(self):
        self.call(b"warmup", timeout=5.0)  # connected before the baseline is taken
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)
        self.channel.close()


class Env:
    def __init__(self, server, sidecar):
        self.server = server
        self.sidecar = sidecar

    @property
    def port(self) -> int:
        return self.sidecar.port


@pytest.fixture(scope="module")
def env():
    server = start_grpc_server()
    sc = start_config_sidecar({"upstream": server.port, "hop": "abuse", "region": "local",
                               "event_loops": 2, "log_level": "info", "limits": LIMITS},
                              name="sidecar-abuse")
    yield Env(server, sc)
    for p in (sc, server):
        p.kill()
        if p in _ALL_PROCS:
            _ALL_PROCS.remove(p)


@contextmanager
def attack(env: Env, rss_growth_mb: float = RSS_GROWTH_MB, settle: float = 8.0):
    """Runs the body with a good client going, then checks every survival invariant."""
    sc = env.sidecar
    with GoodClient(sc.addr) as good:
        base_conns = metric(sc, "insight_downstream_connections_active")
        sampler = RssSampler(sc.popen.pid)
        try:
            yield good
        finally:
            growth = sampler.stop()
        time.sleep(0.3)  # a few more good calls after the attack
    # after the good client is gone, its connection is gone too
    base_conns -= 1
    assert sc.alive(), f"sidecar died (code {sc.popen.returncode}):\n{sc.log_tail()}"
    assert http_get(sc.admin_port, "/healthz")[0] == 200
    assert not good.errors, f"good client saw {len(good.errors)} errors (ok {good.ok}): {good.errors[:5]}"
    assert good.ok > 0, "good client made no calls"
    assert growth < rss_growth_mb, f"RSS grew {growth:.1f} MB during the attack (bound {rss_growth_mb} MB)"
    wait_for(lambda: metric(sc, "insight_streams_active") == 0, settle, "insight_streams_active == 0")
    wait_for(lambda: metric(sc, "insight_downstream_connections_active") <= base_conns, settle,
             f"insight_downstream_connections_active back to {base_conns}")


def rejected(conn: r.RawConn, timeout: float = 4.0) -> str:
    """How the sidecar ended the offending connection: 'goaway:<CODE>' or 'closed'."""
    how, f = conn.wait_goaway_or_close(timeout)
    if how == "goaway":
        return f"goaway:{r.ERROR_NAMES.get(f.error_code, f.error_code)}"
    return how


# --------------------------------------------------------------------------
# client-side attacks
# --------------------------------------------------------------------------

def test_rapid_reset(env):
    """CVE-2023-44487: HEADERS + RST_STREAM loops. nghttp2's reset rate limit
    (burst 50, 10/s here) must end the connection long before 2,000 streams."""
    streams0 = metric(env.sidecar, "insight_streams_total")
    with attack(env) as good:
        c = r.RawConn(env.port)
        sent = 0
        for batch in range(40):
            chunk = b"".join(r.headers(sid, r.request_block(), end_stream=True) + r.rst_stream(sid, r.CANCEL)
                             for sid in range(1 + 100 * batch, 1 + 100 * (batch + 1), 2))
            if not c.send(chunk):
                break
            sent += 50
        how = rejected(c)
        c.close()
        opened = metric(env.sidecar, "insight_streams_total") - streams0 - good.ok - 1
        print(f"rapid reset: {how} after {sent} HEADERS+RST_STREAM pairs, ~{opened:.0f} streams opened")
        assert how in ("goaway:ENHANCE_YOUR_CALM", "goaway:INTERNAL_ERROR", "closed"), \
            f"rapid reset not stopped: {how} after {sent} resets; frames {c.frames[-5:]}"
        assert opened < 1000, f"{opened:.0f} of {sent} reset streams were opened before the limit hit"
    assert env.server.alive()


def test_continuation_flood(env):
    """CVE-2024-28182: one header block spread over unbounded CONTINUATION frames."""
    before = metric(env.sidecar, "insight_protocol_errors_total", side="downstream")
    with attack(env):
        c = r.RawConn(env.port)
        c.send(r.headers(1, r.request_block(), end_stream=True, end_headers=False))
        sent = 0
        for i in range(2000):
            if not c.send(r.continuation(1, r.lit(b"x-flood-%d" % i, b"v" * 32))):
                break
            sent += 1
        how = rejected(c)
        c.close()
        assert how.startswith("goaway") or how == "closed", f"CONTINUATION flood: {how} after {sent} frames"
        assert how != "goaway:NO_ERROR", how
    after = metric(env.sidecar, "insight_protocol_errors_total", side="downstream")
    assert after > before, "CONTINUATION flood not counted as a protocol error"


def _expect_stream_rejected(c: r.RawConn, sid: int) -> str:
    """RST_STREAM on ``sid``, a 431-ish response, or GOAWAY/close."""
    f = c.wait_for(lambda f: f.stream == sid and f.type in (r.RST_STREAM, r.HEADERS) or f.type == r.GOAWAY, 4.0)
    if f is None:
        return "closed" if c.closed else "timeout"
    if f.type == r.RST_STREAM:
        return f"rst:{r.ERROR_NAMES.get(f.error_code, f.error_code)}"
    if f.type == r.GOAWAY:
        return f"goaway:{r.ERROR_NAMES.get(f.error_code, f.error_code)}"
    return f"headers:{f.payload[:8].hex()}"


def test_hpack_bomb(env):
    """One 4 KB dynamic-table entry referenced ~12,000 times: ~48 MB decoded from a 16 KB
    frame. The header list limit (16 KiB here) must reset the stream without decoding it all."""
    before = metric(env.sidecar, "insight_header_list_too_large_total")
    with attack(env):
        c = r.RawConn(env.port)
        block = r.request_block() + r.lit(b"x-bomb", b"a" * 3900, index=True)
        block += r.indexed(62) * (16000 - len(block))
        c.send(r.headers(1, block, end_stream=True))
        how = _expect_stream_rejected(c, 1)
        c.close()
        assert how.startswith("rst:") or how.startswith("goaway:") or how == "closed", how
    after = metric(env.sidecar, "insight_header_list_too_large_total")
    assert after > before, "insight_header_list_too_large_total did not increase"


def test_header_list_over_limit(env):
    """A 20 KB header list (limit 16 KiB) over HEADERS + CONTINUATION: the stream is reset,
    the counter increments, and the connection (its HPACK state) stays usable."""
    before = metric(env.sidecar, "insight_header_list_too_large_total")
    with attack(env):
        c = r.RawConn(env.port)
        block = r.request_block() + b"".join(r.lit(b"x-big-%d" % i, b"b" * 1000) for i in range(20))
        c.send(r.headers(1, block[:15000], end_stream=True, end_headers=False)
               + r.continuation(1, block[15000:], end_headers=True))
        how = _expect_stream_rejected(c, 1)
        assert how.startswith("rst:") or how.startswith("headers:"), f"oversized header list: {how}"
        # The same connection still answers a normal request.
        c.send(r.headers(3, r.request_block(), end_stream=False) + r.data(3, r.grpc_message(b"hi"), end_stream=True))
        f = c.wait_for(lambda f: f.stream == 3 and f.type in (r.HEADERS, r.RST_STREAM), 4.0)
        c.close()
        assert f is not None and f.type == r.HEADERS, f"connection unusable after the reset: {f} {c.frames[-5:]}"
    after = metric(env.sidecar, "insight_header_list_too_large_total")
    assert after > before, "insight_header_list_too_large_total did not increase"


def _flood(env, unit: bytes, seconds: float = 3.0, read: bool = False, open_stream: bool = False,
           batch: int = 2000) -> dict:
    """Sends ``unit`` back to back for ``seconds`` (or until the sidecar closes or stops
    reading). Without ``read`` nothing is read while flooding (the harsher case)."""
    c = r.RawConn(env.port, timeout=0.5)
    if open_stream:
        c.send(r.headers(1, r.request_block(), end_stream=False))
    chunk = unit * batch
    sent, deadline = 0, time.monotonic() + seconds
    stalled = False
    while time.monotonic() < deadline:
        try:
            c.sock.settimeout(0.5)
            c.sock.sendall(chunk)
            sent += batch
        except socket.timeout:
            stalled = True  # the sidecar stopped reading: that is back-pressure, fine
            break
        except OSError:
            c.closed = True
            break
        if read:
            c._fill(0.001)
            c.buf = c.buf[-65536:]
    how = rejected(c, 2.0) if not c.closed else "closed"
    c.close()
    return {"sent": sent, "stalled": stalled, "end": how}


@pytest.mark.parametrize("kind", ["settings", "ping", "window_update", "priority", "empty_data"])
def test_control_frame_floods(env, kind):
    """SETTINGS / PING / WINDOW_UPDATE / PRIORITY / empty-DATA floods from a client that
    never reads: the sidecar must not buffer the answers without bound."""
    units = {
        "settings": r.settings([(r.S_MAX_CONCURRENT_STREAMS, 100)]),
        "ping": r.ping(b"12345678"),
        "window_update": r.window_update(0, 1),
        "priority": None,
        "empty_data": r.data(1, b""),
    }
    with attack(env):
        if kind == "priority":
            unit = b"".join(r.priority(sid, 1, 15) for sid in range(3, 4003, 2))
            res = _flood(env, unit, batch=1)
        else:
            res = _flood(env, units[kind], open_stream=(kind == "empty_data"))
        print(f"{kind} flood: {res}")
    # Reaching here means: alive, healthy, good client clean, RSS bounded, gauges back.


def _written_bytes(pid: int) -> int:
    """Bytes the process passed to write()/send() so far (/proc/PID/io wchar)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def test_zero_window_slow_reader(env, tmp_path):
    """A client that advertises INITIAL_WINDOW_SIZE=0 and never opens it, reading a 100 MB
    body from nghttpd: the sidecar buffers at most its stream window, not the body."""
    require_tool("nghttpd")
    docroot = tmp_path / "www"
    docroot.mkdir()
    with open(docroot / "big", "wb") as f:
        f.truncate(100 << 20)  # sparse
    ngd = start_nghttpd(docroot)
    sc = start_config_sidecar({"upstream": ngd.port, "hop": "slow", "region": "local", "event_loops": 1,
                               "log_level": "info", "limits": LIMITS}, name="sidecar-slow")
    try:
        rss0 = rss_mb(sc.popen.pid)
        c = r.RawConn(sc.port, client_settings=[(r.S_INITIAL_WINDOW_SIZE, 0)])
        c.send(r.headers(1, r.request_block(path="/big", grpc=False), end_stream=True))
        got_headers = c.wait_for(lambda f: f.stream == 1 and f.type == r.HEADERS, 3.0)
        sampler = RssSampler(sc.popen.pid)
        body = 0
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            f = c.read_frame(0.2)
            if f is not None and f.type == r.DATA:
                body += len(f.payload)
        growth = sampler.stop()
        upstream_wrote = _written_bytes(ngd.popen.pid)
        print(f"zero-window reader: nghttpd wrote {upstream_wrote / 1e6:.1f} MB; headers={got_headers} body={body} rss0={rss0:.1f} growth={growth:.1f} MB")
        assert got_headers is not None, f"no response headers: {c.frames[:5]}"
        assert body == 0, f"sidecar sent {body} DATA bytes into a zero window"
        assert growth < SLOW_READER_GROWTH_MB, f"RSS grew {growth:.1f} MB behind a zero-window reader"
        # Back-pressure reaches the upstream: nghttpd could write only the sidecar's windows
        # (1 MiB per stream, 8 MiB per connection), not the 100 MB body.
        assert upstream_wrote < 16 << 20, f"nghttpd wrote {upstream_wrote} bytes: not back-pressured"
        assert sc.alive()
        c.close()
        wait_for(lambda: metric(sc, "insight_streams_active") == 0, 5.0, "stream released after the reader left")
    finally:
        for p in (sc, ngd):
            p.kill()
            if p in _ALL_PROCS:
                _ALL_PROCS.remove(p)


def test_slowloris(env):
    """Nothing, or half a preface: closed after limits.preface_timeout (1 s), counted."""
    sc = env.sidecar
    before = metric(sc, "insight_limit_hits_total", limit="preface_timeout")
    with attack(env):
        silent = r.RawConn(env.port, preface=False)
        partial = r.RawConn(env.port, preface=False)
        partial.send(r.PREFACE[:10])
        no_settings = r.RawConn(env.port, preface=False)  # preface but no SETTINGS frame
        no_settings.send(r.PREFACE)
        t0 = time.monotonic()
        results = [c.drain_until_closed(5.0) for c in (silent, partial, no_settings)]
        took = time.monotonic() - t0
        for c in (silent, partial, no_settings):
            c.close()
        assert all(results), f"slowloris connections still open after {took:.1f}s: {results}"
        assert took < 4.0, f"slowloris connections closed only after {took:.1f}s (preface_timeout 1s)"
    after = metric(sc, "insight_limit_hits_total", limit="preface_timeout")
    assert after - before >= 3, f"insight_limit_hits_total{{limit=preface_timeout}} went {before} -> {after}"


def test_many_idle_connections(env):
    """10,000 idle (but prefaced) connections must not hurt the good client."""
    sc = env.sidecar
    n = 10000
    with attack(env, rss_growth_mb=200):
        base = metric(sc, "insight_downstream_connections_active")
        conns = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", env.port), timeout=2)
                s.sendall(r.PREFACE + r.settings())
                conns.append(s)
            wait_for(lambda: metric(sc, "insight_downstream_connections_active") >= base + n, 10.0,
                     f"{n} idle connections accepted")
            time.sleep(1.0)
        finally:
            for s in conns:
                s.close()


@pytest.mark.parametrize("junk", [
    b"GARBAGE-NOT-AN-HTTP2-PREFACE-AT-ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + r.frame(r.PING, 0, 0, b"x" * 8),  # first frame not SETTINGS
], ids=["invalid_preface", "http1_request", "ping_before_settings"])
def test_bad_preface(env, junk):
    """Not HTTP/2 with prior knowledge: GOAWAY or close, quickly, never a hang."""
    with attack(env):
        c = r.RawConn(env.port, preface=False)
        c.send(junk)
        t0 = time.monotonic()
        how = rejected(c, 3.0)
        closed = c.drain_until_closed(3.0)
        took = time.monotonic() - t0
        c.close()
        assert how.startswith("goaway") or how == "closed", f"{junk[:20]!r}: {how}"
        assert closed, f"{junk[:20]!r}: connection still open {took:.1f}s after {how}"
        assert took < 3.0, f"{junk[:20]!r}: took {took:.1f}s to close"


# --------------------------------------------------------------------------
# upstream faults
# --------------------------------------------------------------------------

class FaultUpstream(H2ServerBase):
    """A gRPC-ish h2c upstream whose behaviour is chosen by the method name:

    ``Ok``            one empty message, grpc-status 0
    ``Rst<N>``        RST_STREAM with error code N once the request has ended
    ``GoawayLow``     first connection only: after 300 ms, GOAWAY with last-stream-id
                      below every in-flight stream, then close; later connections: Ok
    ``Garbage``       write bytes that are not HTTP/2 frames, then keep the socket open
    ``Slow``          never answer
    """

    def __init__(self, helpers):
        super().__init__(helpers)
        self.seen: List[str] = []
        self.goaway_sent = False
        self.connections = 0

    async def serve(self, reader, writer):
        import h2.events as ev
        self.connections += 1
        c = _H2Conn(reader, writer, client_side=False)
        inflight = {}
        goaway_task = None

        def ok(sid):
            c.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            c.conn.send_data(sid, b"\x00\x00\x00\x00\x00")
            c.conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

        async def goaway_later():
            await asyncio.sleep(0.3)
            low = min(inflight) - 2 if inflight else 0
            writer.write(r.goaway(max(low, 0), r.NO_ERROR))
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()

        async for e in c.events():
            if isinstance(e, ev.RequestReceived):
                path = dict(e.headers).get(b":path", b"").decode()
                method = path.rsplit("/", 1)[-1]
                self.seen.append(method)
                inflight[e.stream_id] = method
                if method == "GoawayLow" and not self.goaway_sent:
                    self.goaway_sent = True
                    goaway_task = asyncio.ensure_future(goaway_later())
            elif isinstance(e, ev.DataReceived):
                c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamReset):
                inflight.pop(e.stream_id, None)
            if isinstance(e, ev.StreamEnded) and e.stream_id in inflight:  # h2 reports END_STREAM once here
                sid = e.stream_id
                method = inflight[sid]
                if method.startswith("Rst"):
                    c.conn.reset_stream(sid, int(method[3:]))
                    inflight.pop(sid, None)
                elif method == "Garbage":
                    c.flush()
                    writer.write(b"\x00\x00\x08\xff\xff\xff\xff\xff\xffNOT HTTP/2 AT ALL" * 4)
                elif method == "Slow":
                    pass
                elif method == "GoawayLow" and goaway_task is not None:
                    pass  # this connection is about to GOAWAY below these streams
                else:
                    ok(sid)
                    inflight.pop(sid, None)
            try:
                c.flush()
            except Exception:
                return
        if goaway_task:
            goaway_task.cancel()


@pytest.fixture(scope="module")
def faults():
    helpers = _LoopThread()
    up = FaultUpstream(helpers).start()
    sc = start_config_sidecar({"upstream": up.port, "hop": "faulty", "region": "local", "event_loops": 1,
                               "log_level": "debug"}, name="sidecar-faults")
    ch = make_channel(sc.addr)
    yield up, sc, ch
    ch.close()
    sc.kill()
    if sc in _ALL_PROCS:
        _ALL_PROCS.remove(sc)
    up.stop()
    helpers.stop()


def _call(ch, method: str, timeout: float = 5.0):
    try:
        ch.unary_unary(f"/fault.v1.Fault/{method}")(b"x", timeout=timeout)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


RST_EXPECTED = {code: grpc.StatusCode.INTERNAL for code in range(14)}
RST_EXPECTED[r.CANCEL] = grpc.StatusCode.CANCELLED
RST_EXPECTED[r.ENHANCE_YOUR_CALM] = grpc.StatusCode.RESOURCE_EXHAUSTED
RST_EXPECTED[r.REFUSED_STREAM] = grpc.StatusCode.UNAVAILABLE


def _rst_params():
    for code in sorted(RST_EXPECTED):
        yield pytest.param(code, id=r.ERROR_NAMES[code])


@pytest.mark.parametrize("code", _rst_params())
def test_upstream_rst_stream(faults, code):
    up, sc, ch = faults
    assert _call(ch, "Ok")[0] == grpc.StatusCode.OK
    before = up.seen.count(f"Rst{code}")
    t0 = time.monotonic()
    status, details = _call(ch, f"Rst{code}")
    took = time.monotonic() - t0
    attempts = up.seen.count(f"Rst{code}") - before
    assert status == RST_EXPECTED[code], \
        f"upstream RST_STREAM {r.ERROR_NAMES[code]}: client got {status} ({details!r}), " \
        f"want {RST_EXPECTED[code]}; upstream saw {attempts} attempt(s)"
    if code == r.REFUSED_STREAM:
        assert attempts > 1, f"REFUSED_STREAM was not retried ({attempts} attempt)"
    assert took < 3.0
    wait_for(lambda: metric(sc, "insight_streams_active") == 0, 3.0, "streams_active == 0")


def test_upstream_refused_stream_retried_without_body(faults):
    """A body-less request (END_STREAM on HEADERS) refused by the upstream is retried
    (maxRetries = 2, so 3 attempts), then answered UNAVAILABLE (grpc-status 14)."""
    up, sc, ch = faults
    from conftest import h2_request
    before = up.seen.count("Rst7")
    retries0 = metric(sc, "insight_upstream_retries_total")
    resp, _, trailers = h2_request(sc.port, [(":method", "POST"), (":scheme", "http"),
                                             (":path", "/fault.v1.Fault/Rst7"), (":authority", "x"),
                                             ("content-type", "application/grpc"), ("te", "trailers")])
    attempts = up.seen.count("Rst7") - before
    status = dict(resp or []).get("grpc-status") or dict(trailers or []).get("grpc-status")
    assert attempts == 3, f"want 1 attempt + 2 retries, upstream saw {attempts}"
    assert status == "14", f"response {resp} trailers {trailers}"
    assert metric(sc, "insight_upstream_retries_total") - retries0 == 2


def test_upstream_goaway_below_inflight(faults):
    """GOAWAY with last-stream-id below in-flight streams: those were never processed, so
    the sidecar retries them on a new connection and they succeed."""
    up, sc, ch = faults
    retries0 = metric(sc, "insight_upstream_retries_total")
    results: List = [None] * 4

    def one(i):
        results[i] = _call(ch, "GoawayLow", timeout=5.0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(8)
    assert up.goaway_sent
    assert all(res and res[0] == grpc.StatusCode.OK for res in results), \
        f"calls under an upstream GOAWAY below their stream ids: {results}"
    assert metric(sc, "insight_upstream_retries_total") > retries0


def test_upstream_garbage(faults):
    """Bytes that are not HTTP/2 from the upstream: UNAVAILABLE, promptly."""
    up, sc, ch = faults
    t0 = time.monotonic()
    status, details = _call(ch, "Garbage", timeout=5.0)
    took = time.monotonic() - t0
    assert status == grpc.StatusCode.UNAVAILABLE, f"got {status} ({details!r}) after {took:.1f}s"
    assert took < 3.0, f"garbage from the upstream took {took:.1f}s to fail"
    assert _call(ch, "Ok")[0] == grpc.StatusCode.OK, "no recovery after the garbage connection"
    wait_for(lambda: metric(sc, "insight_streams_active") == 0, 3.0, "streams_active == 0")


def test_upstream_slower_than_deadline(faults):
    """An upstream that never answers: the client's grpc-timeout wins with DEADLINE_EXCEEDED,
    and the sidecar releases the stream on both sides."""
    up, sc, ch = faults
    t0 = time.monotonic()
    status, details = _call(ch, "Slow", timeout=0.5)
    took = time.monotonic() - t0
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED, f"got {status} ({details!r})"
    assert took < 2.0
    wait_for(lambda: metric(sc, "insight_streams_active") == 0, 3.0, "streams_active == 0 after the deadline")
    assert sc.alive()
