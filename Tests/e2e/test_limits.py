"""Connection limits from `limits:` (Docs/configuration.md): max_connections, idle_timeout and
max_connection_age, each counted in insight_limit_hits_total{limit}."""
import socket
import time
import urllib.request

import grpc

import h2raw as r


def metric(sc, name, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{sc.admin_port}/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{" + want) or (not labels and line.startswith(name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def closed_within(sock, seconds):
    sock.settimeout(seconds)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if not sock.recv(65536):
                return True
    except (socket.timeout, OSError):
        return False
    return True


def test_max_connections_closes_the_extra_ones(probe_procs):
    server = probe_procs.grpc_server()
    sc = probe_procs.sidecar({"upstream": server.port, "hop": "limits", "region": "a",
                              "limits": {"max_connections": 5}})
    conns = [socket.create_connection(("127.0.0.1", sc.port), timeout=2) for _ in range(5)]
    for c in conns:
        c.sendall(r.PREFACE + r.settings())
    time.sleep(0.5)
    extra = socket.create_connection(("127.0.0.1", sc.port), timeout=2)
    assert closed_within(extra, 3.0), "the sixth connection was not closed"
    assert metric(sc, "insight_limit_hits_total", limit="max_connections") >= 1
    for c in conns:
        c.close()
    time.sleep(0.5)
    # Below the limit again: a real call works.
    ch = grpc.insecure_channel(sc.addr)
    assert ch.unary_unary("/insight.test.v1.Test/Unary")(b"ok", timeout=5) == b"ok"
    ch.close()


def test_idle_timeout_and_max_age_send_goaway(probe_procs):
    server = probe_procs.grpc_server()
    sc = probe_procs.sidecar({"upstream": server.port, "hop": "limits", "region": "a",
                              "limits": {"idle_timeout": "1s", "max_connection_age": "3s"}})
    idle = r.RawConn(sc.port)
    t0 = time.monotonic()
    assert idle.drain_until_closed(5.0), "idle connection not closed"
    assert 0.8 < time.monotonic() - t0 < 4.0
    assert metric(sc, "insight_limit_hits_total", limit="idle_timeout") >= 1
    # A busy connection still gets a graceful GOAWAY once it is older than max_connection_age.
    ch = grpc.insecure_channel(sc.addr)
    call = ch.unary_unary("/insight.test.v1.Test/Unary")
    end = time.monotonic() + 6
    while time.monotonic() < end:
        assert call(b"x", timeout=5) == b"x"  # grpc reconnects transparently after GOAWAY
        time.sleep(0.1)
    ch.close()
    assert metric(sc, "insight_limit_hits_total", limit="max_connection_age") >= 1
