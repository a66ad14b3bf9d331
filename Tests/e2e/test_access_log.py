"""The access log against its documentation (Docs/operations.md, "Access log").

grpcio calls through a sidecar started with ``--access-log FILE``: an OK call carrying a
W3C ``traceparent``, an error status, a call the client cancels at its deadline, and a call
to a sidecar whose upstream is a closed port. Every line written is parsed and checked
against the table in the docs: no field that is not documented, every ``always`` field
present, fields in the documented order, the documented JSON types, an RFC 3339 UTC
timestamp with milliseconds, and the documented words for ``end``.
"""

import datetime
import json
import os
import re
import time
from pathlib import Path

import grpc
import pytest

import h2raw as r
from conftest import TEST_SERVICE, free_port, make_channel, metric_sum, metrics_text, wait_for

DOCS = Path(__file__).resolve().parents[2] / "Docs" / "operations.md"
RFC3339_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
JSON_TYPES = {"string": str, "number": (int, float), "array": list}


def documented_fields():
    """[(field, type, present, meaning)] from the table under "## Access log"."""
    text = DOCS.read_text()
    section = text.split("\n## Access log\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"^\| `([a-z_]+)` \| (\w+) \| ([^|]+) \| (.+) \|$", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3).strip(), m.group(4)))
    assert len(rows) >= 10, f"no access log table in {DOCS}"
    return rows


def read_lines(path: Path, want: int, timeout: float = 10.0):
    deadline = time.time() + timeout
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        if len(lines) >= want or time.time() > deadline:
            return lines
        time.sleep(0.1)


def check_line(line: dict, rows) -> None:
    names = [r[0] for r in rows]
    undocumented = [k for k in line if k not in names]
    assert not undocumented, f"fields not in Docs/operations.md: {undocumented} in {line}"
    order = [names.index(k) for k in line]
    assert order == sorted(order), f"fields out of the documented order: {list(line)}"
    for name, typ, present, meaning in rows:
        if present == "always":
            assert name in line, f"documented always-present field {name!r} missing from {line}"
        if name in line:
            assert isinstance(line[name], JSON_TYPES[typ]), f"{name} is not a {typ}: {line}"
    assert RFC3339_MS_UTC.match(line["time"]), line["time"]
    t = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert abs(t.timestamp() - time.time()) < 60, f"time {line['time']} is not now (UTC)"
    end_row = next(r for r in rows if r[0] == "end")
    words = re.findall(r"`([a-z_]+)`", end_row[3])
    assert line["end"] in words, f"end={line['end']!r} is not one of the documented {words}"
    for name, _, present, _ in rows:
        if present.startswith("with "):
            conditions = re.findall(r"`([a-z_]+)`", present)
            assert (name in line) == (line["end"] in conditions), f"{name} present iff end in {conditions}: {line}"
    for seg in line.get("segments", []):
        assert set(seg) == {"segment", "next", "ms"}, seg
    for key in ("dur_ms", "ttfb_ms", "self_ms"):
        if key in line:
            assert line[key] >= 0


def test_access_log_lines_match_the_docs(procs, tmp_path):
    rows = documented_fields()
    log = tmp_path / "access.jsonl"
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--access-log", str(log)])
    ch = make_channel(sc.addr)
    unary = ch.unary_unary(TEST_SERVICE + "Unary")
    unary(b"hi", metadata=[("traceparent", TRACEPARENT)], timeout=5)
    with pytest.raises(grpc.RpcError) as e:
        unary(b"x", metadata=[("x-status-code", "5"), ("x-status-message", "nope")], timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        unary(b"x", metadata=[("x-sleep-ms", "3000")], timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stream = ch.unary_stream(TEST_SERVICE + "ServerStream")(
        b"", metadata=[("x-count", "100"), ("x-size", "10"), ("x-interval-ms", "100")], timeout=10)
    next(stream)
    stream.cancel()
    ch.close()
    assert len(read_lines(log, 4)) == 4  # the cancel is logged before the next sidecar writes

    dead = procs.sidecar(free_port(), extra=["--access-log", str(log)])
    ch = make_channel(dead.addr)
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary(TEST_SERVICE + "Unary")(b"x", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()

    lines = read_lines(log, 5)
    assert len(lines) == 5, lines
    for line in lines:
        check_line(line, rows)
    ok, err, deadline, cancelled, unavailable = lines

    assert ok["trace_id"] == TRACE_ID
    assert (ok["code"], ok["end"], ok["hop"], ok["source"]) == ("OK", "completed", "test", "traffic")
    assert (ok["service"], ok["method"], ok["http_method"]) == ("insight.test.v1.Test", "Unary", "POST")
    assert {"dur_ms", "ttfb_ms", "self_ms", "segments"} <= set(ok), ok
    assert ok["segments"] == [{"segment": "test", "next": "service", "ms": ok["dur_ms"]}]
    assert re.fullmatch(r"[0-9a-f]{32}", err["trace_id"]) and err["trace_id"] != TRACE_ID
    assert (err["code"], err["end"]) == ("NOT_FOUND", "completed")
    # The client's RST_STREAM(CANCEL) at its deadline races the server's own DEADLINE_EXCEEDED
    # trailers (grpcio enforces grpc-timeout too): either way the code is DEADLINE_EXCEEDED.
    assert deadline["code"] == "DEADLINE_EXCEEDED", deadline
    assert (deadline["end"], deadline.get("reset_code")) in (("client_reset", "CANCEL"), ("completed", None)), \
        deadline
    assert (cancelled["code"], cancelled["end"], cancelled["reset_code"]) == ("CANCELLED", "client_reset", "CANCEL"), \
        cancelled
    assert (unavailable["code"], unavailable["end"]) == ("UNAVAILABLE", "upstream_unavailable")
    assert unavailable["message"], unavailable
    # Every documented field was seen on a real line (the table has no dead rows).
    seen = set().union(*(set(x) for x in lines))
    assert seen == {r[0] for r in rows}, f"documented but never written: {sorted({r[0] for r in rows} - seen)}"


def test_a_client_connection_that_goes_away_is_logged_as_client_reset_cancel(procs, tmp_path):
    """No `end` word of its own for a lost connection: its open streams end as if the client
    had reset them with CANCEL (Docs/operations.md, `end`)."""
    rows = documented_fields()
    log = tmp_path / "access.jsonl"
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--access-log", str(log)])
    c = r.RawConn(sc.port)
    block = r.request_block(authority="test", extra=[(b"x-sleep-ms", b"3000")])
    assert c.send(r.headers(1, block) + r.data(1, r.grpc_message(b"x"), end_stream=True))
    time.sleep(0.5)  # the request reaches the upstream, which sleeps
    c.sock.close()
    lines = read_lines(log, 1)
    assert len(lines) == 1, lines
    check_line(lines[0], rows)
    assert (lines[0]["end"], lines[0]["reset_code"]) == ("client_reset", "CANCEL"), lines[0]


def test_a_call_never_sent_upstream_has_no_dur_ms(procs, tmp_path):
    """A call queued behind the upstream's MAX_CONCURRENT_STREAMS (one connection allowed) and
    reset by the client before its HEADERS went upstream: `dur` (request headers sent →) never
    started, so the line has no dur_ms and no ttfb_ms; the duration histogram still observes it,
    from when its headers were received (Docs/metrics.md)."""
    from bridge_peers import BRIDGE_SERVICE, BridgeUpstream, H2Client, LoopThread, grpc_frame, \
        grpc_request_headers
    from conftest import metric_sum, metrics_text

    lt = LoopThread()
    up = BridgeUpstream(lt, max_concurrent_streams=1).start()
    try:
        log = tmp_path / "access.jsonl"
        cfg = tmp_path / "onecon.yaml"
        cfg.write_text("limits:\n  max_upstream_connections: 1\n")
        sc = procs.sidecar(up.port, extra=["--access-log", str(log), "--event-loops", "1", "--config", str(cfg)])
        c = H2Client(sc.port)
        # The held request never ends, so the upstream never answers it: its one slot stays taken.
        held = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Held"), grpc_frame(b"x"), end_stream=False)
        time.sleep(0.3)
        queued = c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Queued"), grpc_frame(b"x"))
        time.sleep(0.5)
        c.conn.reset_stream(queued, 8)  # CANCEL
        c._flush()
        time.sleep(0.3)
        c.conn.reset_stream(held, 8)
        c._flush()
        lines = read_lines(log, 2)
        c.close()
        assert [p for h in up.requests for k, p in h if k == ":path"] == [BRIDGE_SERVICE + "Held"], up.requests
        by_method = {line["method"]: line for line in lines}
        q = by_method["Queued"]
        assert (q["code"], q["end"]) == ("CANCELLED", "client_reset"), q
        assert "dur_ms" not in q and "ttfb_ms" not in q, q
        assert by_method["Held"]["dur_ms"] >= 700, by_method["Held"]
        text = metrics_text(sc)
        labels = {"service": "bridge.v1.Bridge", "method": "Queued", "source": "traffic"}
        assert metric_sum(text, "insight_upstream_duration_seconds_count", **labels) == 1, text
        assert metric_sum(text, "insight_upstream_duration_seconds_sum", **labels) >= 0.45, text
    finally:
        up.stop()
        lt.stop()


def unary_calls(addr, n):
    ch = make_channel(addr)
    try:
        fn = ch.unary_unary(TEST_SERVICE + "Unary")
        for _ in range(n):
            fn(b"x", timeout=5)
    finally:
        ch.close()


def dropped(sc, reason):
    return metric_sum(metrics_text(sc), "insight_access_log_dropped_total", reason=reason)


def test_a_full_device_counts_every_line_as_a_write_error_and_warns_once(procs):
    """``access_log: /dev/full``: every write(2) fails with ENOSPC. Each line is counted in
    ``insight_access_log_dropped_total{reason="write_error"}`` (none as ``queue_full``) and
    the log says so once, not once per batch (it used to lose them silently)."""
    server = procs.grpc_server()
    sc = procs.sidecar(server.port, extra=["--access-log", "/dev/full"])
    calls = 40
    for _ in range(4):
        unary_calls(sc.addr, calls // 4)
        time.sleep(0.1)  # several batches, so that "once" means something
    wait_for(lambda: dropped(sc, "write_error") == calls, timeout=10,
             what=f"write_error = {calls}: {dropped(sc, 'write_error')}")
    assert dropped(sc, "queue_full") == 0
    log = sc.log.read_text()
    assert log.count("access log write failing") == 1, sc.log_tail()
    assert "No space left on device" in log, sc.log_tail()
    assert "access log write recovered" not in log


def test_a_fifo_whose_reader_left_counts_write_errors_and_recovers_when_one_comes_back(procs, tmp_path):
    """The FIFO's reader goes away: writes fail with EPIPE, every line is counted as a
    write error, one warning. A new reader: lines arrive again, whole (the first line after
    the gap is not glued to a torn one), and one notice says how many were lost."""
    server = procs.grpc_server()
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    sc = procs.sidecar(server.port, extra=["--access-log", str(fifo)])
    os.close(reader)
    unary_calls(sc.addr, 15)
    wait_for(lambda: dropped(sc, "write_error") == 15, timeout=10,
             what=f"write_error = 15: {dropped(sc, 'write_error')}")
    assert sc.log.read_text().count("access log write failing") == 1, sc.log_tail()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        unary_calls(sc.addr, 5)
        got = b""
        deadline = time.time() + 10
        while got.count(b"\n") < 5 and time.time() < deadline:
            try:
                got += os.read(reader, 65536)
            except BlockingIOError:
                time.sleep(0.05)
        lines = [json.loads(x) for x in got.splitlines() if x.strip()]
        assert len(lines) == 5, got
        wait_for(lambda: "access log write recovered" in sc.log.read_text(), timeout=5, what="recovered notice")
        log = sc.log.read_text()
        assert log.count("access log write recovered") == 1 and "lost=15" in log, sc.log_tail()
        assert dropped(sc, "write_error") == 15 and dropped(sc, "queue_full") == 0
    finally:
        os.close(reader)
