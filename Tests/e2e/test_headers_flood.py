"""A client that never reads its socket and opens streams as fast as it can (found by the second
adversarial pass on issue 11).

Past 100 concurrent streams every HEADERS is refused with RST_STREAM, and the RST_STREAMs pile up
for a socket that is full. The cap on frames outside flow control (``max_queued_control_bytes``,
1 MiB) must bound the memory they hold, not only their bytes on the wire (13 per RST_STREAM): it
used to let this client push the sidecar to ~230 MB of RSS. The connection must end (counted),
RSS must stay bounded, and the sidecar must serve the next client.
"""

import socket
import time
from pathlib import Path

import hpack

import h2raw as r
from conftest import h2_request, metric_sum, metrics_text, start_config_sidecar, start_nghttpd


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_headers_flood_from_a_client_that_never_reads_is_bounded(tmp_path):
    (tmp_path / "one").write_bytes(b"x")
    server = start_nghttpd(tmp_path)
    sc = None
    try:
        sc = start_config_sidecar({"upstream": server.port, "hop": "flood", "region": "r"}, name="sidecar-flood")
        idle = _rss_mb(sc.popen.pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", sc.port))
        s.settimeout(5)
        s.sendall(r.PREFACE + r.settings([(4, 1 << 20)]) + r.window_update(0, 1 << 30))
        # HPACK with indexing, as a real client would: after the first, each HEADERS is a few
        # bytes, so one read brings thousands of them.
        encoder = hpack.Encoder()
        stream, peak, sent, stopped = 1, idle, 0, None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            try:
                block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/one")])
                s.sendall(r.headers(stream, block, end_stream=True))
            except OSError as e:
                stopped = e
                break
            sent += 1
            stream += 2
            if sent % 2000 == 0:
                peak = max(peak, _rss_mb(sc.popen.pid))
                time.sleep(0.01)
        s.close()
        peak = max(peak, _rss_mb(sc.popen.pid))
        print(f"flood: {sent} HEADERS, RSS {idle:.0f} -> {peak:.0f} MB, stopped by {stopped!r}")
        assert stopped is not None, f"the sidecar kept reading {sent} HEADERS from a client that never reads"
        assert peak - idle < 60, f"RSS {idle:.0f} -> {peak:.0f} MB for {sent} HEADERS"
        text = metrics_text(sc)
        assert metric_sum(text, "insight_limit_hits_total", limit="max_queued_control_bytes") >= 1
        assert sc.popen.poll() is None
        deadline = time.monotonic() + 5
        while metric_sum(metrics_text(sc), "insight_streams_active") != 0:
            assert time.monotonic() < deadline, "streams left after the flood"
            time.sleep(0.1)
        headers, body, _ = h2_request(sc.port, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                                                (":path", "/one")])
        assert dict(headers).get(":status") == "200" and body == b"x", (headers, body)
    finally:
        if sc:
            sc.stop()
        server.stop()
