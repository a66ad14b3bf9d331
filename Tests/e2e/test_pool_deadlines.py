"""Upstream pool deadlines and pruning (issue 11, "Deadlines and pruning"):

- a stream that waits longer than ``limits.upstream_wait_timeout`` for a slot on an upstream
  connection gets gRPC UNAVAILABLE, counted as ``insight_limit_hits_total{limit="upstream_wait_timeout"}``;
- an upstream connection without streams for ``limits.upstream_idle_timeout`` gets GOAWAY
  (NO_ERROR) and is closed, counted as ``limit="upstream_idle_timeout"``, and never while busy;
- the pool of a probe target that discovery drops is closed.
"""
import asyncio
import threading
import time

import grpc

from conftest import H2ServerBase, _h2_config, make_channel, metric_sum, metrics_text, wait_for

UNARY = "/insight.test.v1.Test/Unary"
LIMIT_HITS = "insight_limit_hits_total"


class LimitedGrpcUpstream(H2ServerBase):
    """An h2c upstream that advertises SETTINGS_MAX_CONCURRENT_STREAMS ``max_streams`` and
    answers each request ``delay`` seconds after its end, like a gRPC server (one empty
    message, ``grpc-status: 0``). Counts connections, requests, GOAWAYs received and closes."""

    def __init__(self, helpers, delay: float = 0.0, max_streams: int = 1):
        super().__init__(helpers)
        self.delay = delay
        self.max_streams = max_streams
        self.connections = 0
        self.requests = 0
        self.goaways = []
        self.closed = 0
        self.closed_at = []

    async def serve(self, reader, writer):
        import h2.connection
        import h2.events as ev
        import h2.settings
        self.connections += 1
        conn = h2.connection.H2Connection(config=_h2_config(False))
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        loop = asyncio.get_running_loop()

        def answer(sid):
            try:
                conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
                conn.send_data(sid, b"\x00\x00\x00\x00\x00")
                conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
                writer.write(conn.data_to_send())
            except Exception as e:  # the stream may be gone by then
                self.errors.append(repr(e))

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for e in conn.receive_data(data):
                    if isinstance(e, ev.RequestReceived):
                        self.requests += 1
                    elif isinstance(e, ev.DataReceived):
                        conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    elif isinstance(e, ev.ConnectionTerminated):
                        self.goaways.append(e.error_code)
                    if isinstance(e, ev.StreamEnded) or (isinstance(e, ev.RequestReceived) and e.stream_ended):
                        loop.call_later(self.delay, answer, e.stream_id)
                writer.write(conn.data_to_send())
        finally:
            self.closed += 1
            self.closed_at.append(time.monotonic())


def start_upstream(h2_helpers, **kw) -> LimitedGrpcUpstream:
    return LimitedGrpcUpstream(h2_helpers, **kw).start()


def value(sc, name, **labels) -> float:
    return metric_sum(metrics_text(sc), name, **labels) or 0.0


def test_wait_for_a_slot_past_the_timeout_gets_unavailable(probe_procs, h2_helpers):
    """One upstream connection (max_upstream_connections 1) with room for one stream
    (MAX_CONCURRENT_STREAMS 1) held by a slow call: a second call waits for the slot and is
    answered UNAVAILABLE after upstream_wait_timeout, without reaching the upstream; the
    slow call still completes."""
    upstream = start_upstream(h2_helpers, delay=4.0)
    try:
        sc = probe_procs.sidecar({
            "upstream": upstream.port, "hop": "pool", "region": "a", "event_loops": 1,
            "limits": {"max_upstream_connections": 1, "upstream_wait_timeout": "1s"}})
        ch = make_channel(sc.addr)
        try:
            slow = ch.unary_unary(UNARY).future(b"", timeout=15)
            wait_for(lambda: upstream.requests == 1, 5, "the slow call at the upstream")
            t0 = time.monotonic()
            try:
                ch.unary_unary(UNARY)(b"", timeout=10)
                raise AssertionError("the waiting call succeeded")
            except grpc.RpcError as e:
                waited = time.monotonic() - t0
                assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            assert 0.8 <= waited < 3.0, f"answered after {waited:.2f}s, expected ~1s"
            assert upstream.requests == 1, "the timed-out call reached the upstream"
            assert value(sc, LIMIT_HITS, limit="upstream_wait_timeout") == 1
            assert slow.result() == b""
            # The slot is free again: a call goes through.
            assert ch.unary_unary(UNARY)(b"", timeout=10) == b""
            assert value(sc, LIMIT_HITS, limit="upstream_wait_timeout") == 1
        finally:
            ch.close()
        assert sc.alive()
    finally:
        upstream.stop()


def test_idle_upstream_connection_gets_goaway_and_closes(probe_procs, h2_helpers):
    """A call that takes longer than upstream_idle_timeout keeps its connection; once the
    connection has had no stream for upstream_idle_timeout it gets GOAWAY(NO_ERROR) and is
    closed; the next call opens a new one."""
    upstream = start_upstream(h2_helpers, delay=2.0, max_streams=100)
    try:
        sc = probe_procs.sidecar({
            "upstream": upstream.port, "hop": "pool", "region": "a", "event_loops": 1,
            "limits": {"upstream_idle_timeout": "1s"}})
        ch = make_channel(sc.addr)
        try:
            assert ch.unary_unary(UNARY)(b"", timeout=10) == b""
            done = time.monotonic()
            assert upstream.closed == 0, "a busy connection was closed"
            wait_for(lambda: upstream.closed == 1, 5, "the idle upstream connection closed")
            idle_for = upstream.closed_at[0] - done
            assert 0.8 <= idle_for < 3.0, f"closed {idle_for:.2f}s after its last stream"
            assert upstream.goaways == [0], f"GOAWAYs received: {upstream.goaways}"
            assert value(sc, LIMIT_HITS, limit="upstream_idle_timeout") == 1
            assert value(sc, "insight_upstream_connections_active") == 0
            assert ch.unary_unary(UNARY)(b"", timeout=10) == b""
            assert upstream.connections == 2
        finally:
            ch.close()
        assert sc.alive()
    finally:
        upstream.stop()


def _write_atomic(path, text):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_dropped_probe_target_pool_is_closed(probe_procs, tmp_path):
    """Two probe targets in this region, each probed over its own pool; when the targets file
    drops one, its connection closes while the other's stays and keeps being probed. (The
    upstream gets no traffic: besides the probe pools' connections there is only the one the
    start-up readiness check opened, idle in the upstream's pool for upstream_idle_timeout.)"""
    upstream = probe_procs.grpc_server()
    kept = probe_procs.grpc_server()
    dropped = probe_procs.grpc_server()
    path = tmp_path / "targets.yaml"
    _write_atomic(path, f"""
- {{name: kept, address: "127.0.0.1:{kept.port}", region: a}}
- {{name: dropped, address: "127.0.0.1:{dropped.port}", region: a}}
""")
    sc = probe_procs.sidecar({
        "upstream": upstream.port, "hop": "prober", "region": "a", "event_loops": 2,
        "probes": {"interval": "200ms", "timeout": "1s", "targets_file": str(path),
                   "targets_file_refresh": "200ms"}})

    def successes(name):
        return value(sc, "insight_probe_total", target=name, result="success")

    wait_for(lambda: successes("kept") >= 1 and successes("dropped") >= 1, 5, "both targets probed")
    wait_for(lambda: value(sc, "insight_upstream_connections_active") == 3, 5,
             "two probe connections and the start-up check's")
    _write_atomic(path, f'- {{name: kept, address: "127.0.0.1:{kept.port}", region: a}}\n')
    wait_for(lambda: value(sc, "insight_upstream_connections_active") == 2, 5,
             "the dropped target's connection closed")
    before = successes("kept")
    wait_for(lambda: successes("kept") >= before + 3, 5, "the kept target still probed")
    assert value(sc, "insight_upstream_connections_active") == 2
    # Neither deadline did it.
    assert value(sc, LIMIT_HITS, limit="upstream_idle_timeout") == 0
    # The target comes back: a new pool, probed again.
    _write_atomic(path, f"""
- {{name: kept, address: "127.0.0.1:{kept.port}", region: a}}
- {{name: dropped, address: "127.0.0.1:{dropped.port}", region: a}}
""")
    wait_for(lambda: successes("dropped") >= 1 and value(sc, "insight_upstream_connections_active") == 3, 5,
             "the returning target probed on a new connection")
    assert sc.alive()


def test_many_waiters_time_out_in_order_and_the_sidecar_keeps_serving(probe_procs, h2_helpers):
    """Ten calls queue behind a held slot: each gets UNAVAILABLE about upstream_wait_timeout
    after it started (one timer per pool serves them all), all are counted."""
    upstream = start_upstream(h2_helpers, delay=5.0)
    try:
        sc = probe_procs.sidecar({
            "upstream": upstream.port, "hop": "pool", "region": "a", "event_loops": 1,
            "limits": {"max_upstream_connections": 1, "upstream_wait_timeout": "1s"}})
        ch = make_channel(sc.addr)
        try:
            slow = ch.unary_unary(UNARY).future(b"", timeout=15)
            wait_for(lambda: upstream.requests == 1, 5, "the slow call at the upstream")
            results = {}

            def call(i):
                time.sleep(0.1 * i)
                t0 = time.monotonic()
                try:
                    ch.unary_unary(UNARY)(b"", timeout=10)
                    results[i] = ("OK", time.monotonic() - t0)
                except grpc.RpcError as e:
                    results[i] = (e.code().name, time.monotonic() - t0)

            threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            assert sorted(results) == list(range(10))
            for i, (code, waited) in results.items():
                assert code == "UNAVAILABLE" and 0.8 <= waited < 3.0, (i, code, waited)
            assert value(sc, LIMIT_HITS, limit="upstream_wait_timeout") == 10
            assert upstream.requests == 1
            assert slow.result() == b""
        finally:
            ch.close()
    finally:
        upstream.stop()
