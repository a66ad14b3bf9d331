"""The stream bridge under hostile and unlucky peers (issue 11), end to end.

Four inputs, each against real peers (grpcio, grpc_server.py, Python ``h2`` on raw sockets),
each with a well-behaved grpcio client going through the same sidecar that must see 0 errors:

1. early responder: an upstream answers (HEADERS + END_STREAM) before reading a 50 KB body,
   with a 1,000-byte window, and never reads nor resets; the client reads the answer and
   leaves. The stream must be released, and the upstream closing its connection afterwards
   must not take the process down;
2. a slow reader (window 0) of 10 server streams must not starve other clients' unary calls
   (response direction, ``--event-loops 1``);
3. 16 stalled uploads must not starve a unary call on the same grpcio channel (request
   direction);
4. a client that never reads its socket while asking for ~6 KB of response headers 400 times
   a second must not make the sidecar's RSS grow without bound.

And three interop details: ``te: Trailers`` is forwarded as ``te: trailers``; a
``grpc-message`` ending in a space passes through with its real status; a refused stream
that cannot be replayed is reset with REFUSED_STREAM, not answered UNAVAILABLE.

Every wait is bounded; each test takes well under 30 s.
"""

import socket
import threading
import time
from typing import List

import grpc
import pytest

import h2raw as r
from bridge_peers import (BRIDGE_SERVICE, EARLY_MESSAGE, SPACE_MESSAGE, UNARY, BigHeadersFlooder,
                          BridgeUpstream, GoodClient, H2Client, RssSampler, grpc_frame, grpc_request_headers,
                          own_channel, rss_mb)
from conftest import _ALL_PROCS, _LoopThread, metric_sum, metrics_text, start_config_sidecar, start_grpc_server

SERVER_STREAM = "/insight.test.v1.Test/ServerStream"
CLIENT_STREAM = "/insight.test.v1.Test/ClientStream"
MiB = 1 << 20


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def helpers():
    lt = _LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def peers(helpers):
    """Factory for this test's sidecars, grpc_server.py processes and BridgeUpstreams;
    everything is stopped at teardown."""
    procs, ups = [], []

    class Factory:
        def sidecar(self, upstream_port: int, name: str = "sidecar-bridge", **cfg):
            conf = {"upstream": upstream_port, "hop": "bridge", "region": "local", "log_level": "info"}
            conf.update(cfg)
            sc = start_config_sidecar(conf, name=name)
            procs.append(sc)
            return sc

        def grpc_server(self):
            p = start_grpc_server()
            procs.append(p)
            return p

        def upstream(self, **kw) -> BridgeUpstream:
            u = BridgeUpstream(helpers, **kw).start()
            ups.append(u)
            return u

    yield Factory()
    for p in reversed(procs):
        p.kill()
        if p in _ALL_PROCS:
            _ALL_PROCS.remove(p)
    for u in ups:
        u.stop()


def metric(sc, name: str, **labels) -> float:
    return metric_sum(metrics_text(sc), name, **labels) or 0.0


def poll(pred, timeout: float, interval: float = 0.05):
    """Polls ``pred`` for up to ``timeout`` s; returns (True, value) as soon as it is truthy,
    else (False, last value). Scrape errors count as falsy (the process may be gone)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except Exception as e:  # noqa: BLE001 - a failed scrape, a dead process
            last = e
        if last and not isinstance(last, Exception):
            return True, last
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(interval)


def alive_or_report(sc) -> str:
    """'' if the sidecar runs, else how it ended, with the end of its log."""
    if sc.alive():
        return ""
    try:
        fatal = [line for line in sc.log.read_text("utf-8", "replace").splitlines()
                 if "fatal" in line.lower() or "crashed" in line.lower()][:5]
    except OSError:
        fatal = []
    return (f"sidecar exited with code {sc.popen.returncode}: " + (" | ".join(fatal) or "(no fatal line)")
            + f"\nlog tail:\n{sc.log_tail(8)}")


def good_report(good: GoodClient) -> str:
    return f"good client: {good.ok} ok, {len(good.errors)} errors {good.errors[:3]}"


# --------------------------------------------------------------------------
# 1. early responder
# --------------------------------------------------------------------------

EARLY_ROUNDS = 3
EARLY_BODY = 50_000


def test_early_response_unread_body_released_and_no_abort(peers):
    """An upstream answers at once (HEADERS + END_STREAM, grpc-status 3) with a 1,000-byte
    window, never reads the 50 KB body and never resets. The client sends the body with
    END_STREAM, reads the answer to its end and disconnects. The stream must be released
    (insight_streams_active 0, client connections back to the good client's alone), and the
    upstream then closing its connection must leave the process alive and serving."""
    up = peers.upstream(initial_window=1000)
    sc = peers.sidecar(up.port)
    problems: List[str] = []
    with GoodClient(sc.addr, pause=0.05) as good:
        time.sleep(0.2)
        base_conns = metric(sc, "insight_downstream_connections_active")
        for rnd in range(EARLY_ROUNDS):
            if up.open_connections() == 0:  # a fresh upstream connection: warm it up first
                poll(lambda: up.open_connections() > 0, 3.0)
            c = H2Client(sc.port)
            sid = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Early"),
                            body=grpc_frame(b"b" * (EARLY_BODY - 5)), end_stream=True)
            res = c.wait(sid, 5.0)
            c.close()
            status = res.field("grpc-status")
            if not res.ended or status != "3" or res.field("grpc-message") != EARLY_MESSAGE:
                problems.append(f"round {rnd}: early answer not passed through: {res}")
            released, last = poll(lambda: metric(sc, "insight_streams_active") == 0
                                  and metric(sc, "insight_downstream_connections_active") == base_conns, 5.0)
            if not released:
                problems.append(
                    f"round {rnd}: stream not released 5 s after the client left: insight_streams_active "
                    f"{metric(sc, 'insight_streams_active') if sc.alive() else '?'}, "
                    f"insight_downstream_connections_active "
                    f"{metric(sc, 'insight_downstream_connections_active') if sc.alive() else '?'} "
                    f"(good client's alone: {base_conns:.0f}); the upstream got {up.early_data_bytes} "
                    f"body bytes so far")
            closed = up.close_all(linger=0.3)
            time.sleep(1.0)  # the abort in issue 11 came right after the upstream closed
            dead = alive_or_report(sc)
            if dead:
                problems.append(f"round {rnd}: after the upstream closed {closed} connection(s): {dead}")
                break
            # A new call after the upstream went away (the pool must reconnect).
            try:
                ch = own_channel(sc.addr)
                try:
                    out = ch.unary_unary(UNARY)(b"after", timeout=3.0)
                finally:
                    ch.close()
                if out != b"after":
                    problems.append(f"round {rnd}: new call got {out!r}")
            except grpc.RpcError as e:
                problems.append(f"round {rnd}: new call after the upstream closed failed: {e.code()} {e.details()}")
    dead = alive_or_report(sc)
    if dead and not any("exited" in p for p in problems):
        problems.append(dead)
    assert not problems, "\n".join(problems) + "\n" + good_report(good)
    assert not good.errors and good.ok > 0, good_report(good)
    assert not up.errors, up.errors


# --------------------------------------------------------------------------
# 2. slow reader, response direction
# --------------------------------------------------------------------------

SLOW_STREAMS = 10
OTHER_CALLS = 5
OTHER_DEADLINE = 3.0


def _unary_on_fresh_channels(addr: str, n: int, deadline: float) -> List[str]:
    """``n`` unary calls at once, each from its own grpcio channel: 'ok' or the error."""
    results = ["not run"] * n

    def one(i):
        ch = own_channel(addr)
        try:
            out = ch.unary_unary(UNARY)(b"other-%d" % i, timeout=deadline)
            results[i] = "ok" if out == b"other-%d" % i else f"wrong payload {out[:20]!r}"
        except grpc.RpcError as e:
            results[i] = f"{e.code().name}: {e.details()}"
        finally:
            ch.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline + 5)
    return results


def test_slow_reader_does_not_starve_other_clients(peers):
    """One client connection with SETTINGS_INITIAL_WINDOW_SIZE 0 opens 10 server streams of
    200 x 1 MiB and never reads. Other clients' unary calls (own channels, 3 s deadline) must
    all succeed; with one event loop they share the sidecar's upstream connection(s)."""
    srv = peers.grpc_server()
    sc = peers.sidecar(srv.port, event_loops=1)
    with GoodClient(sc.addr, deadline=OTHER_DEADLINE) as good:
        slow = r.RawConn(sc.port, client_settings=[(r.S_INITIAL_WINDOW_SIZE, 0)])
        md = [(b"x-count", b"200"), (b"x-size", str(MiB).encode())]
        out = b""
        for i in range(SLOW_STREAMS):
            sid = 1 + 2 * i
            out += (r.headers(sid, r.request_block(path=SERVER_STREAM, extra=md))
                    + r.data(sid, r.grpc_message(b""), end_stream=True))
        assert slow.send(out)
        # Let the upstream fill every window the sidecar gives it.
        poll(lambda: metric(sc, "insight_streams_active") >= SLOW_STREAMS, 3.0)
        time.sleep(1.5)
        t0 = time.monotonic()
        results = _unary_on_fresh_channels(sc.addr, OTHER_CALLS, OTHER_DEADLINE)
        took = time.monotonic() - t0
        slow.close()
    ok = results.count("ok")
    print(f"slow reader: {ok}/{OTHER_CALLS} other calls ok in {took:.1f}s; {good_report(good)}")
    assert ok == OTHER_CALLS, \
        f"only {ok} of {OTHER_CALLS} unary calls from other clients succeeded behind a zero-window " \
        f"reader of {SLOW_STREAMS} streams: {results}; {good_report(good)}"
    assert not good.errors, good_report(good)
    released, last = poll(lambda: metric(sc, "insight_streams_active") == 0, 5.0)
    assert released, f"insight_streams_active {last} 5 s after the slow reader left"
    assert sc.alive(), alive_or_report(sc)


# --------------------------------------------------------------------------
# 3. stalled uploads, request direction
# --------------------------------------------------------------------------

STALLED_UPLOADS = 16
UPLOAD_MESSAGES = 8
STALL_ROUNDS = 3
STALL_FILL_WAIT = 1.0   # without it the unary call often slips in before the windows fill


def test_stalled_uploads_do_not_starve_unary_on_same_channel(peers):
    """One grpcio channel starts 16 client-streaming calls of 8 x 1 MiB to a handler that
    sleeps without reading (``x-read-delay-ms``); a unary call on the same channel must
    still succeed within its 3 s deadline. Direct to grpc_server.py it always does."""
    srv = peers.grpc_server()
    sc = peers.sidecar(srv.port)
    chunk = b"u" * MiB
    outcomes = []
    with GoodClient(sc.addr, deadline=OTHER_DEADLINE) as good:
        for rnd in range(STALL_ROUNDS):
            ch = own_channel(sc.addr)
            uploads = []
            try:
                ch.unary_unary(UNARY)(b"warm", timeout=OTHER_DEADLINE)  # the channel is connected
                upload = ch.stream_unary(CLIENT_STREAM)
                uploads = [upload.future(iter([chunk] * UPLOAD_MESSAGES),
                                         metadata=[("x-read-delay-ms", "20000")], timeout=20)
                           for _ in range(STALLED_UPLOADS)]
                time.sleep(STALL_FILL_WAIT)
                t0 = time.monotonic()
                try:
                    out = ch.unary_unary(UNARY)(b"same-channel", timeout=OTHER_DEADLINE)
                    outcomes.append("ok" if out == b"same-channel" else f"wrong payload {out[:20]!r}")
                except grpc.RpcError as e:
                    outcomes.append(f"{e.code().name} after {time.monotonic() - t0:.1f}s")
                still_running = sum(1 for f in uploads if not f.done())
            finally:
                for f in uploads:
                    f.cancel()
                ch.close()
            if still_running != STALLED_UPLOADS:
                outcomes[-1] += f" (only {still_running} uploads were still stalled)"
    print(f"stalled uploads: {outcomes}; {good_report(good)}")
    assert all(o == "ok" for o in outcomes), \
        f"unary call on a channel with {STALLED_UPLOADS} stalled uploads, per round: {outcomes}; " \
        f"{good_report(good)}"
    assert not good.errors, good_report(good)
    released, last = poll(lambda: metric(sc, "insight_streams_active") == 0, 5.0)
    assert released, f"insight_streams_active {last} 5 s after the uploads were cancelled"
    assert sc.alive(), alive_or_report(sc)


# --------------------------------------------------------------------------
# 4. non-reading client, memory
# --------------------------------------------------------------------------

FLOOD_RATE = 400          # GET/s
FLOOD_SECONDS = 20.0
RSS_SETTLE = 4.0          # growth is measured from this many seconds in
RSS_GROWTH_BOUND_MB = 15.0


def test_non_reading_client_memory_is_bounded(peers):
    """A client sends ~400 small GET/s and never reads its socket; the upstream answers each
    with ~6 KB of response headers and END_STREAM (no body: nothing flow-controlled). The
    sidecar's RSS must stay bounded (it may stop reading the connection, or close it with
    GOAWAY ENHANCE_YOUR_CALM) and the good client must keep working."""
    up = peers.upstream(big_header_bytes=6000)
    sc = peers.sidecar(up.port)
    limit_hits0 = metric(sc, "insight_limit_hits_total")
    with GoodClient(sc.addr, deadline=OTHER_DEADLINE, pause=0.05) as good:
        sampler = RssSampler(sc.popen.pid, interval=0.25)
        flood = BigHeadersFlooder(sc.port, rate=FLOOD_RATE).start()
        try:
            time.sleep(FLOOD_SECONDS)
        finally:
            flood.stop()
            sampler.stop()
        how = flood.closed_by_peer()
        flood.close()
        answered = up.seen["BigHeaders"]
    limit_hits = metric(sc, "insight_limit_hits_total") - limit_hits0
    base = sampler.at(RSS_SETTLE)
    peak = sampler.peak_after(RSS_SETTLE)
    first, last = sampler.samples[0][1], sampler.samples[-1][1]
    trace = " ".join(f"{v:.0f}" for ts, v in sampler.samples[::8])

    def when(t):
        return "never" if t is None else f"{t:.1f}s"

    summary = (f"flooder sent {flood.sent} GETs in {FLOOD_SECONDS:.0f}s (sidecar stopped reading: "
               f"{when(flood.stalled_at)}, closed: {when(flood.closed_at)}), upstream answered {answered}; "
               f"connection end: {how or 'still open'}; "
               f"limit hits +{limit_hits:.0f}; RSS {first:.1f} -> {base:.1f} at {RSS_SETTLE:.0f}s -> peak "
               f"{peak:.1f} -> {last:.1f} MiB; every 2 s: {trace}")
    print("non-reading client:", summary)
    assert sc.alive(), alive_or_report(sc)
    assert peak - base < RSS_GROWTH_BOUND_MB, \
        f"RSS grew {peak - base:.1f} MiB after the first {RSS_SETTLE:.0f}s behind a non-reading client " \
        f"(bound {RSS_GROWTH_BOUND_MB} MiB): {summary}"
    assert not good.errors and good.ok > 0, good_report(good)
    if how is not None and how.startswith("goaway"):
        assert how == "goaway:ENHANCE_YOUR_CALM", summary
    released, last_v = poll(lambda: metric(sc, "insight_streams_active") == 0, 5.0)
    assert released, f"insight_streams_active {last_v} after the flooder left"


@pytest.mark.parametrize("upstream_reads", [False, True], ids=["stalled-upstream", "reading-upstream"])
def test_tiny_data_behind_large_ignored_frames_is_not_amplified(peers, upstream_reads):
    """A client sends a 16 KB frame of an unknown type (ignored, no flow control) and then one
    byte of DATA, 8,000 times. Each byte arrives as a slice of a ~16 KiB read: kept as it is,
    every queued byte held its whole read (+128 MiB RSS for 8,000 bytes, found by a hostile
    tester), whether the bytes wait for a stalled upstream's window or are kept for a replay
    after a reading upstream took them. What waits is compacted (Sources/H2Proxy/Session/
    DataChunkQueue.swift): RSS grows by a few MiB at most."""
    up = peers.upstream()
    sc = peers.sidecar(up.port)
    # "Stall" never reads the body (no WINDOW_UPDATE) nor answers; "Echo" reads it all, and the
    # sidecar keeps what it wrote for a replay until the response starts (it never does: the
    # request never ends).
    method = "Echo" if upstream_reads else "Stall"
    s = socket.create_connection(("127.0.0.1", sc.port), timeout=10)
    s.sendall(r.PREFACE + r.settings() + r.window_update(0, (1 << 31) - 1 - 65535))
    s.sendall(r.headers(1, r.request_block(path=BRIDGE_SERVICE + method)))
    time.sleep(0.5)
    before = rss_mb(sc.popen.pid)
    junk = r.frame(0xFA, 0, 0, b"\0" * 16000)
    for i in range(8000):
        s.sendall(junk + r.data(1, b"x"))
        if i % 64 == 63:
            time.sleep(0.001)
    time.sleep(1.0)
    after = rss_mb(sc.popen.pid)
    s.close()
    assert sc.alive(), alive_or_report(sc)
    assert after - before < 24, f"RSS {before:.1f} -> {after:.1f} MiB for 8,000 bytes of DATA"
    released, last_v = poll(lambda: metric(sc, "insight_streams_active") == 0, 5.0)
    assert released, f"insight_streams_active {last_v} after the client left"


# --------------------------------------------------------------------------
# interop details
# --------------------------------------------------------------------------

@pytest.mark.parametrize("te", ["Trailers", "TRAILERS"])
def test_te_trailers_any_case_forwarded_as_lowercase(peers, te):
    """``te: Trailers`` is ``te: trailers`` (the keyword is case-insensitive, RFC 9110
    §10.1.4): the upstream must get ``te: trailers``, not lose the field. A grpc-core upstream
    (grpc_server.py) resets a stream without it, and answers "Error parsing 'te' metadata" to
    the mixed-case spelling, so it must get the lower-case one and answer OK."""
    up = peers.upstream()
    sc = peers.sidecar(up.port)
    srv = peers.grpc_server()
    sc_grpc = peers.sidecar(srv.port, name="sidecar-bridge-grpc")
    with GoodClient(sc.addr) as good:
        c = H2Client(sc.port)
        sid = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Echo", te=te), grpc_frame(b"hi"))
        res = c.wait(sid, 5.0)
        c.close()
        seen = [h for h in up.requests if dict(h).get(":path", "").endswith("/Echo")]
    assert res.ended and res.field("grpc-status") == "0", f"te: {te} through the sidecar: {res}"
    assert seen, f"the upstream never saw the request: {up.requests}"
    te_fields = [v for k, v in seen[-1] if k.lower() == "te"]
    assert te_fields == ["trailers"], f"te: {te} reached the upstream as te fields {te_fields}: {seen[-1]}"
    # The same through a grpc-core upstream.
    c = H2Client(sc_grpc.port)
    sid = c.request(grpc_request_headers(sc_grpc.port, UNARY, te=te), grpc_frame(b"hello"))
    res = c.wait(sid, 5.0)
    c.close()
    assert res.reset is None and res.field("grpc-status") == "0" and bytes(res.data) == grpc_frame(b"hello"), \
        f"te: {te} through the sidecar to grpc_server.py: {res}"
    assert not good.errors, good_report(good)


@pytest.mark.parametrize("method", ["SpaceMessage", "SpaceMessageTO"], ids=["trailers", "trailers_only"])
def test_grpc_message_with_trailing_space_passes_through(peers, method):
    """An upstream error whose ``grpc-message`` ends in a space (grpc-core sends it
    unencoded; gRPC's grammar allows it) must reach the client with its real status and
    message, as it does directly, not as INTERNAL."""
    up = peers.upstream()
    sc = peers.sidecar(up.port)
    results = {}
    with GoodClient(sc.addr) as good:
        for where, addr in (("direct", f"127.0.0.1:{up.port}"), ("sidecar", sc.addr)):
            ch = own_channel(addr)
            try:
                ch.unary_unary(BRIDGE_SERVICE + method)(b"x", timeout=5.0)
                results[where] = ("OK", "")
            except grpc.RpcError as e:
                results[where] = (e.code().name, e.details())
            finally:
                ch.close()
    assert results["direct"] == ("INVALID_ARGUMENT", SPACE_MESSAGE), f"the upstream itself: {results}"
    assert results["sidecar"] == results["direct"], \
        f"grpc-message {SPACE_MESSAGE!r} (grpc-status 3) through the sidecar: {results['sidecar']}, " \
        f"directly: {results['direct']}"
    assert not good.errors, good_report(good)


def test_grpc_message_with_crlf_still_rejected(peers):
    """Control for the test above: a field value with CR LF stays malformed (RFC 9113
    §8.2.1) and must not reach the client as the upstream's status and message."""
    up = peers.upstream()
    sc = peers.sidecar(up.port)
    with GoodClient(sc.addr) as good:
        ch = own_channel(sc.addr)
        try:
            ch.unary_unary(BRIDGE_SERVICE + "BadMessage")(b"x", timeout=5.0)
            got = ("OK", "")
        except grpc.RpcError as e:
            got = (e.code().name, e.details())
        finally:
            ch.close()
    assert got[0] not in ("OK", "INVALID_ARGUMENT") and "\n" not in got[1], \
        f"a grpc-message with CR LF went through: {got}"
    assert not good.errors, good_report(good)
    assert sc.alive(), alive_or_report(sc)


REFUSED_BODY = 100_000  # over the 64 KiB the sidecar keeps for a replay


def test_refused_on_every_attempt_names_hop_and_upstream(peers):
    """A small request the upstream refuses on every attempt is replayed, then answered with
    UNAVAILABLE whose message names this sidecar's hop and the upstream's address (it read
    only "upstream refused stream", so the diagnosis had no first_seen_at)."""
    up = peers.upstream()
    sc = peers.sidecar(up.port)
    c = H2Client(sc.port)
    sid = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Refuse"), grpc_frame(b"r"), end_stream=True)
    res = c.wait(sid, 5.0)
    c.close()
    assert res.field("grpc-status") == "14", res
    message = res.field("grpc-message") or ""
    assert message.startswith("bridge: upstream 127.0.0.1:") and "refused the stream (REFUSED_STREAM) on 3 attempts" \
        in message, message
    assert up.seen["Refuse"] == 3


def test_refused_stream_not_replayable_is_reset_refused(peers):
    """The upstream reads a 100 KB request (more than the 64 KiB kept for a replay) and then
    refuses the stream. The sidecar cannot replay it, so it must reset the client stream with
    REFUSED_STREAM (the client may retry it), not answer with a gRPC status; and it must not
    send the upstream a second, truncated attempt."""
    up = peers.upstream(initial_window=MiB)
    sc = peers.sidecar(up.port)
    with GoodClient(sc.addr) as good:
        c = H2Client(sc.port)
        sid = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Refuse"),
                        grpc_frame(b"r" * (REFUSED_BODY - 5)), end_stream=True)
        res = c.wait(sid, 5.0)
        c.close()
    attempts = up.seen["Refuse"]
    assert res.reset == r.REFUSED_STREAM and res.headers is None, \
        f"a refused stream that cannot be replayed reached the client as {res}, want RST_STREAM " \
        f"REFUSED_STREAM (7) and no response; upstream attempts: {attempts}"
    assert attempts == 1, f"the upstream saw {attempts} attempts of a request it cannot be sent again"
    assert not good.errors, good_report(good)
    released, last = poll(lambda: metric(sc, "insight_streams_active") == 0, 5.0)
    assert released, f"insight_streams_active {last} after the refused stream"
