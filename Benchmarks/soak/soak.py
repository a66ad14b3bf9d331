#!/usr/bin/env python3
"""Soak: mixed traffic through one sidecar for a while, sampling its RSS, open file descriptors
and stream counts; the verdict is whether they stay flat.

Traffic (all at once, bounded rates): grpcio unary calls, server-streaming calls, calls cancelled
mid-stream, deadline-exceeded calls, the sidecar's own health probes (every 200 ms), and a
misbehaving raw HTTP/2 client (bursts of HEADERS+RST_STREAM, then garbage) reconnecting in a loop.

Optional hostile peers (issue 11; all off by default, so a run without these flags is the same
soak as before):

  --slow-readers N      N client connections at a time, each with SETTINGS_INITIAL_WINDOW_SIZE 0,
                        opening --slow-reader-streams (10) server streams of 200 x 1 MiB and never
                        reading; each is dropped after --hold seconds and replaced.
  --stalled-uploads N   one grpcio channel at a time starts N client-streaming calls of 8 x 1 MiB to
                        a handler that does not read (x-read-delay-ms), then makes a unary call on
                        the same channel (it must succeed: counted in `su_ok` or `errors`); the
                        uploads are cancelled after --hold seconds and the round starts again.
  --early-responders N  N calls a second: a raw h2 client sends a 50 KB body to an upstream that
                        answers at once (HEADERS + END_STREAM, grpc-status 3), has a 1,000-byte
                        window, never reads nor resets; the client reads the answer and leaves.
                        That upstream (Tests/e2e/bridge_peers.py BridgeUpstream) closes its
                        connections every --upstream-close-every seconds. It needs its own
                        upstream, so it runs behind a second sidecar ("B", same binary, same
                        settings) with its own well-behaved unary loop; B's RSS, fds and streams
                        are sampled too.

With any of them, the extra columns are printed and the verdict also needs 0 errors from the
well-behaved traffic (unary, streams, the unary calls next to stalled uploads, B's unary loop)
and, with early responders, sidecar B alive, flat and with no stream left.

Usage: python3 Benchmarks/soak/soak.py [--seconds 600] [--binary .build/release/insight-sidecar]
       [--slow-readers 1] [--stalled-uploads 16] [--early-responders 5]
Only loopback is used; every process started is stopped at the end.
"""
import argparse, os, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

import grpc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close(); return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open")


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def proc_stats(pid):
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


# ---- optional hostile peers (issue 11) ---------------------------------------------------------

MiB = 1 << 20


def safe_metric(admin, name):
    try:
        return metric(admin, name)
    except OSError:
        return float("nan")


def safe_proc_stats(pid):
    try:
        return proc_stats(pid)
    except OSError:
        return 0, 0


class Extra:
    """Counters of the optional traffic, shared by its threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = {"slow": 0, "stalled": 0, "su_ok": 0, "early": 0, "early_bad": 0, "b_unary": 0, "closes": 0}

    def bump(self, k, n=1):
        with self.lock:
            self.c[k] += n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


def slow_reader_loop(listen, streams, hold, stop, extra):
    """A connection with window 0 opens `streams` server streams of 200 x 1 MiB and never reads;
    dropped after `hold` s and replaced."""
    import h2raw as r
    md = [(b"x-count", b"200"), (b"x-size", str(MiB).encode())]
    while not stop.is_set():
        try:
            c = r.RawConn(listen, client_settings=[(r.S_INITIAL_WINDOW_SIZE, 0)])
            out = b""
            for i in range(streams):
                sid = 1 + 2 * i
                out += (r.headers(sid, r.request_block(path="/insight.test.v1.Test/ServerStream", extra=md))
                        + r.data(sid, r.grpc_message(b""), end_stream=True))
            c.send(out)
            extra.bump("slow")
            stop.wait(hold)
            c.close()
        except OSError:
            stop.wait(0.5)


def stalled_upload_loop(listen, uploads, hold, stop, extra, bump_error, opts):
    """`uploads` stalled client-streaming calls on one channel, then a unary call on it."""
    chunk = b"u" * MiB
    # Its own TCP connection: grpcio otherwise shares one among all channels with the same
    # arguments (the other loops' too), and 16 cancels a round would then count against that
    # connection's stream_reset_rate limit.
    opts = list(opts) + [("grpc.use_local_subchannel_pool", 1)]
    while not stop.is_set():
        ch = grpc.insecure_channel(f"127.0.0.1:{listen}", options=opts)
        futures = []
        try:
            ch.unary_unary("/insight.test.v1.Test/Unary")(b"warm", timeout=5)
            up = ch.stream_unary("/insight.test.v1.Test/ClientStream")
            futures = [up.future(iter([chunk] * 8), metadata=[("x-read-delay-ms", str(int(hold * 1000 + 5000)))],
                                 timeout=hold + 10) for _ in range(uploads)]
            extra.bump("stalled")
            stop.wait(1.0)
            ch.unary_unary("/insight.test.v1.Test/Unary")(b"next to stalled uploads", timeout=3)
            extra.bump("su_ok")
            stop.wait(max(0.0, hold - 1.0))
        except grpc.RpcError:
            bump_error()
        finally:
            for f in futures:
                f.cancel()
            ch.close()


def early_responder_loop(listen_b, rate, stop, extra):
    """`rate` calls a second to the early-answering upstream behind sidecar B."""
    from bridge_peers import BRIDGE_SERVICE, H2Client, grpc_frame, grpc_request_headers
    interval = 1.0 / rate
    while not stop.is_set():
        t0 = time.time()
        try:
            c = H2Client(listen_b, timeout=3)
            sid = c.request(grpc_request_headers(listen_b, BRIDGE_SERVICE + "Early"),
                            body=grpc_frame(b"b" * (50_000 - 5)), timeout=3)
            res = c.wait(sid, 3)
            c.close()
            extra.bump("early" if res.field("grpc-status") == "3" else "early_bad")
        except Exception:  # noqa: BLE001 - a sidecar that died, a refused connection
            extra.bump("early_bad")
        stop.wait(max(0.0, interval - (time.time() - t0)))


def upstream_close_loop(upstream, every, stop, extra):
    while not stop.wait(every):
        try:
            upstream.close_all(linger=0.3)
            extra.bump("closes")
        except Exception:  # noqa: BLE001
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--binary", default=os.path.join(REPO, ".build/release/insight-sidecar"))
    ap.add_argument("--sample", type=float, default=10)
    ap.add_argument("--slow-readers", type=int, default=0,
                    help="zero-window client connections at a time (default 0: none)")
    ap.add_argument("--slow-reader-streams", type=int, default=10,
                    help="server streams of 200 x 1 MiB each slow reader opens")
    ap.add_argument("--stalled-uploads", type=int, default=0,
                    help="stalled 8 x 1 MiB client-streaming calls per round on one channel (default 0: none)")
    ap.add_argument("--early-responders", type=float, default=0,
                    help="early-responder calls per second, behind a second sidecar (default 0: none)")
    ap.add_argument("--upstream-close-every", type=float, default=5,
                    help="seconds between the early-responder upstream closing its connections")
    ap.add_argument("--hold", type=float, default=5,
                    help="seconds a slow reader or a round of stalled uploads lasts")
    args = ap.parse_args()
    hostile = args.slow_readers > 0 or args.stalled_uploads > 0 or args.early_responders > 0
    if hostile:
        sys.path.insert(0, os.path.join(REPO, "Tests/e2e"))  # h2raw, bridge_peers

    tmp = tempfile.mkdtemp(prefix="insight-soak-")
    backend, listen, admin = free_port(), free_port(), free_port()
    procs = []
    side_b = admin_b = bridge = helpers = None  # the early-responder set-up, if any
    stop = threading.Event()
    counts = {"unary": 0, "stream": 0, "cancel": 0, "deadline": 0, "bad": 0, "errors": 0}
    lock = threading.Lock()

    def bump(k, n=1):
        with lock:
            counts[k] += n

    try:
        procs.append(subprocess.Popen([sys.executable, os.path.join(REPO, "Tests/e2e/grpc_server.py"),
                                       "--port", str(backend)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(backend)
        cfg = os.path.join(tmp, "sidecar.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listen: 127.0.0.1:{listen}
upstream: 127.0.0.1:{backend}
hop: soak
region: a
admin: 127.0.0.1:{admin}
limits: {{stream_reset_burst: 50, stream_reset_rate: 10}}
probes:
  interval: 200ms
  timeout: 1s
  targets:
    - {{name: backend, address: "127.0.0.1:{backend}", region: a, kind: health}}
""")
        side = subprocess.Popen([args.binary, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "sidecar.log"), "w"))
        procs.append(side)
        wait_port(listen)
        opts = [("grpc.max_receive_message_length", 64 << 20)]

        def unary_loop():
            ch = grpc.insecure_channel(f"127.0.0.1:{listen}", options=opts)
            call = ch.unary_unary("/insight.test.v1.Test/Unary")
            while not stop.is_set():
                try:
                    call(b"x" * 1024, timeout=5); bump("unary")
                except grpc.RpcError:
                    bump("errors")
                time.sleep(0.002)
            ch.close()

        def stream_loop():
            ch = grpc.insecure_channel(f"127.0.0.1:{listen}", options=opts)
            call = ch.unary_stream("/insight.test.v1.Test/ServerStream")
            i = 0
            while not stop.is_set():
                i += 1
                md = [("x-count", "20"), ("x-size", "4096"), ("x-interval-ms", "5")]
                try:
                    it = call(b"", metadata=md, timeout=5)
                    if i % 3 == 0:
                        next(it); it.cancel(); bump("cancel")
                    else:
                        for _ in it:
                            pass
                        bump("stream")
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.CANCELLED:
                        bump("errors")
                if i % 10 == 0:
                    try:
                        ch.unary_unary("/insight.test.v1.Test/Unary")(b"", metadata=[("x-sleep-ms", "300")], timeout=0.05)
                    except grpc.RpcError as e:
                        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                            bump("deadline")
                        else:
                            bump("errors")
            ch.close()

        def bad_client_loop():
            preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            hpack = bytes([0x83, 0x86, 0x84, 0x41, 0x01, 0x61])  # POST, http, /, :authority a
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", listen), 2)
                    out = bytearray(preface)
                    for sid in range(1, 400, 2):
                        out += len(hpack).to_bytes(3, "big") + b"\x01\x05" + sid.to_bytes(4, "big") + hpack
                        out += b"\x00\x00\x04\x03\x00" + sid.to_bytes(4, "big") + b"\x00\x00\x00\x08"
                    out += b"garbage" * 10
                    s.sendall(bytes(out))
                    s.settimeout(1)
                    try:
                        while s.recv(65536):
                            pass
                    except OSError:
                        pass
                    s.close(); bump("bad")
                except OSError:
                    pass
                time.sleep(0.5)

        threads = [threading.Thread(target=f, daemon=True) for f in
                   (unary_loop, unary_loop, stream_loop, stream_loop, bad_client_loop)]

        # ---- optional hostile peers ----
        extra = Extra()
        for _ in range(args.slow_readers):
            threads.append(threading.Thread(target=slow_reader_loop, daemon=True,
                                            args=(listen, args.slow_reader_streams, args.hold, stop, extra)))
        if args.stalled_uploads > 0:
            threads.append(threading.Thread(target=stalled_upload_loop, daemon=True,
                                            args=(listen, args.stalled_uploads, args.hold, stop, extra,
                                                  lambda: bump("errors"), opts)))
        if args.early_responders > 0:
            from bridge_peers import BridgeUpstream, LoopThread
            helpers = LoopThread()
            bridge = BridgeUpstream(helpers, initial_window=1000).start()
            listen_b, admin_b = free_port(), free_port()
            cfg_b = os.path.join(tmp, "sidecar-b.yaml")
            with open(cfg_b, "w") as f:
                f.write(f"""listen: 127.0.0.1:{listen_b}
upstream: 127.0.0.1:{bridge.port}
hop: soak-b
region: a
admin: 127.0.0.1:{admin_b}
limits: {{stream_reset_burst: 50, stream_reset_rate: 10}}
""")
            side_b = subprocess.Popen([args.binary, "run", "--config", cfg_b], stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(tmp, "sidecar-b.log"), "w"))
            procs.append(side_b)
            wait_port(listen_b)

            def unary_loop_b():
                ch = grpc.insecure_channel(f"127.0.0.1:{listen_b}", options=opts)
                call = ch.unary_unary("/insight.test.v1.Test/Unary")
                while not stop.is_set():
                    try:
                        call(b"x" * 1024, timeout=5); extra.bump("b_unary")
                    except grpc.RpcError:
                        bump("errors")
                        time.sleep(0.2)  # a dead sidecar B: count it, do not spin
                    time.sleep(0.01)
                ch.close()

            threads.append(threading.Thread(target=unary_loop_b, daemon=True))
            threads.append(threading.Thread(target=early_responder_loop, daemon=True,
                                            args=(listen_b, args.early_responders, stop, extra)))
            threads.append(threading.Thread(target=upstream_close_loop, daemon=True,
                                            args=(bridge, args.upstream_close_every, stop, extra)))
        for t in threads:
            t.start()

        samples = []
        start = time.time()
        print(f"soak: {args.seconds:.0f} s, sampling every {args.sample:.0f} s; binary {args.binary}")
        header = f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'streams':>8} {'conns':>6} {'unary':>8} {'stream':>7} {'cancel':>7} {'bad':>5} {'errors':>6}"
        if hostile:
            header += f" {'slow':>5} {'stall':>5} {'su_ok':>5}"
        if side_b is not None:
            header += f" {'early':>6} {'e_bad':>5} {'closes':>6} {'B RSS':>6} {'B fds':>5} {'B strm':>6} {'B unary':>7}"
        print(header)
        samples_b = []
        while time.time() - start < args.seconds:
            time.sleep(args.sample)
            if hostile:  # a sidecar that died must not end the run with a traceback
                rss, fds = safe_proc_stats(side.pid)
                streams = safe_metric(admin, "insight_streams_active")
                conns = safe_metric(admin, "insight_downstream_connections_active")
            else:
                rss, fds = proc_stats(side.pid)
                streams = metric(admin, "insight_streams_active")
                conns = metric(admin, "insight_downstream_connections_active")
            with lock:
                c = dict(counts)
            samples.append((time.time() - start, rss, fds, streams))
            line = (f"{time.time() - start:6.0f} {rss / 1024:8.1f} {fds:5d} {streams:8.0f} {conns:6.0f} {c['unary']:8d} "
                    f"{c['stream']:7d} {c['cancel']:7d} {c['bad']:5d} {c['errors']:6d}")
            if hostile:
                x = extra.snapshot()
                line += f" {x['slow']:5d} {x['stalled']:5d} {x['su_ok']:5d}"
            if side_b is not None:
                rss_b, fds_b = safe_proc_stats(side_b.pid)
                streams_b = safe_metric(admin_b, "insight_streams_active")
                samples_b.append((time.time() - start, rss_b, fds_b, streams_b))
                line += (f" {x['early']:6d} {x['early_bad']:5d} {x['closes']:6d} {rss_b / 1024:6.1f} {fds_b:5d}"
                         f" {streams_b:6.0f} {x['b_unary']:7d}")
            print(line, flush=True)
        stop.set()
        for t in threads:
            t.join(10)
        time.sleep(3)
        if hostile:
            rss_end, fds_end = safe_proc_stats(side.pid)
            streams_end = safe_metric(admin, "insight_streams_active")
            conns_end = safe_metric(admin, "insight_downstream_connections_active")
        else:
            rss_end, fds_end = proc_stats(side.pid)
            streams_end = metric(admin, "insight_streams_active")
            conns_end = metric(admin, "insight_downstream_connections_active")
        alive = side.poll() is None
        third = max(1, len(samples) // 3)
        early = sum(s[1] for s in samples[:third]) / third
        late = sum(s[1] for s in samples[-third:]) / third
        growth = (late - early) / early if early else 0
        print(f"\nafter traffic: RSS {rss_end / 1024:.1f} MiB, fds {fds_end}, streams active {streams_end:.0f}, "
              f"client connections {conns_end:.0f}, sidecar alive: {alive}")
        print(f"RSS first third {early / 1024:.1f} MiB, last third {late / 1024:.1f} MiB ({growth * 100:+.1f}%)")
        print(f"calls: {counts}")
        ok = alive and streams_end == 0 and conns_end == 0 and growth < 0.10
        if hostile:
            print(f"hostile peers: {extra.snapshot()}")
            if counts["errors"]:
                print(f"well-behaved traffic saw {counts['errors']} errors")
            ok = ok and counts["errors"] == 0
        if side_b is not None:
            rss_b_end, fds_b_end = safe_proc_stats(side_b.pid)
            streams_b_end = safe_metric(admin_b, "insight_streams_active")
            conns_b_end = safe_metric(admin_b, "insight_downstream_connections_active")
            alive_b = side_b.poll() is None
            third_b = max(1, len(samples_b) // 3)
            early_b = sum(s[1] for s in samples_b[:third_b]) / third_b if samples_b else 0
            late_b = sum(s[1] for s in samples_b[-third_b:]) / third_b if samples_b else 0
            growth_b = (late_b - early_b) / early_b if early_b else 0
            print(f"sidecar B (early responders): RSS {rss_b_end / 1024:.1f} MiB, fds {fds_b_end}, streams active "
                  f"{streams_b_end:.0f}, client connections {conns_b_end:.0f}, alive: {alive_b}"
                  + ("" if alive_b else f" (exit code {side_b.returncode}; log {os.path.join(tmp, 'sidecar-b.log')})"))
            print(f"sidecar B RSS first third {early_b / 1024:.1f} MiB, last third {late_b / 1024:.1f} MiB "
                  f"({growth_b * 100:+.1f}%)")
            ok = ok and alive_b and streams_b_end == 0 and conns_b_end == 0 and growth_b < 0.10
        print("verdict: FLAT" if ok else "verdict: NOT FLAT")
        return 0 if ok else 1
    finally:
        stop.set()
        if bridge is not None:
            bridge.stop()
            helpers.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
