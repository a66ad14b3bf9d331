#!/usr/bin/env python3
"""Soak: mixed traffic through one sidecar for a while, sampling its RSS, open file descriptors
and stream counts; the verdict is whether they stay flat.

Traffic (all at once, bounded rates): grpcio unary calls, server-streaming calls, calls cancelled
mid-stream, deadline-exceeded calls, the sidecar's own health probes (every 200 ms), and a
misbehaving raw HTTP/2 client (bursts of HEADERS+RST_STREAM, then garbage) reconnecting in a loop.

Usage: python3 Benchmarks/soak/soak.py [--seconds 600] [--binary .build/release/insight-sidecar]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--binary", default=os.path.join(REPO, ".build/release/insight-sidecar"))
    ap.add_argument("--sample", type=float, default=10)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="insight-soak-")
    backend, listen, admin = free_port(), free_port(), free_port()
    procs = []
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
        for t in threads:
            t.start()

        samples = []
        start = time.time()
        print(f"soak: {args.seconds:.0f} s, sampling every {args.sample:.0f} s; binary {args.binary}")
        print(f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'streams':>8} {'conns':>6} {'unary':>8} {'stream':>7} {'cancel':>7} {'bad':>5} {'errors':>6}")
        while time.time() - start < args.seconds:
            time.sleep(args.sample)
            rss, fds = proc_stats(side.pid)
            streams = metric(admin, "insight_streams_active")
            conns = metric(admin, "insight_downstream_connections_active")
            with lock:
                c = dict(counts)
            samples.append((time.time() - start, rss, fds, streams))
            print(f"{time.time() - start:6.0f} {rss / 1024:8.1f} {fds:5d} {streams:8.0f} {conns:6.0f} {c['unary']:8d} "
                  f"{c['stream']:7d} {c['cancel']:7d} {c['bad']:5d} {c['errors']:6d}", flush=True)
        stop.set()
        for t in threads:
            t.join(10)
        time.sleep(3)
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
        print("verdict: FLAT" if ok else "verdict: NOT FLAT")
        return 0 if ok else 1
    finally:
        stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
