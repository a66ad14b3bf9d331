"""TLS on both sides of the sidecar: the four mixes, mTLS, ALPN, bad certificates and
bad input, reload, and memory across many failed handshakes.

Certificates are made per session by ``tls_certs`` with the ``openssl`` command line.
"""

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import (CHANNEL_OPTIONS, LOG_DIR, SERVER_SCRIPT, _spawn, _wait_until, make_channel,
                      metric_sum, metrics_text, require_sidecar, tail, tcp_connectable, free_port)
from tls_certs import PKI

UNARY = "/insight.test.v1.Test/Unary"
STREAM = "/insight.test.v1.Test/ServerStream"


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI(LOG_DIR / "pki")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def start_tls_grpc_server(procs_list, leaf=None, client_ca: Path = None):
    port = free_port()
    argv = [sys.executable, "-u", str(SERVER_SCRIPT), "--port", str(port)]
    if leaf is not None:
        argv += ["--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key)]
    if client_ca is not None:
        argv += ["--tls-client-ca", str(client_ca)]
    proc = _spawn("grpc-server-tls", argv, port)
    procs_list.append(proc)
    _wait_until(proc, lambda: "listening on" in tail(proc.log, 5) and tcp_connectable(port),
                f"listening on {port}")
    return proc


def write_config(tmp_path: Path, tls: dict = None, upstream_tls: dict = None) -> Path:
    lines = []
    for section, values in (("tls", tls), ("upstream_tls", upstream_tls)):
        if values:
            lines.append(f"{section}:")
            lines += [f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]
    path = tmp_path / f"sidecar-{time.monotonic_ns()}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def server_tls(pki, leaf=None, **extra) -> dict:
    leaf = leaf or pki.server
    return {"cert": leaf.cert, "key": leaf.key, **extra}


def tls_channel(addr: str, pki, client=None, ca=None) -> grpc.Channel:
    chain, key = client.read() if client else (None, None)
    creds = grpc.ssl_channel_credentials(root_certificates=(ca or pki.ca.cert).read_bytes(),
                                         private_key=key, certificate_chain=chain)
    return grpc.secure_channel(addr, creds, options=CHANNEL_OPTIONS)


def unary(channel, payload: bytes = b"hello", timeout: float = 5.0) -> bytes:
    call = channel.unary_unary(UNARY, request_serializer=None, response_deserializer=None)
    return call(payload, timeout=timeout)


def tls_errors(sc, side: str, reason: str) -> float:
    return metric_sum(metrics_text(sc), "insight_tls_handshake_errors_total", side=side, reason=reason) or 0


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def s_client(port: int, *args: str, hold: float = 0.0) -> str:
    """Runs ``openssl s_client``; ``hold`` keeps stdin open that long (to receive TLS 1.3 tickets)."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(hold)
    out, _ = proc.communicate(b"", timeout=10)
    return out.decode("utf-8", "replace")


def client_hello(alpn=None) -> bytes:
    """The bytes of a TLS ClientHello from Python's ssl module, without a socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def send_and_drain(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Connects, sends ``data``, reads until the peer closes; returns what it sent back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def tls_procs(procs):
    started = []
    yield procs, started
    for p in started:
        p.kill()


# --------------------------------------------------------------------------
# every mix of TLS and h2c
# --------------------------------------------------------------------------

@pytest.mark.parametrize("down,up", [("tls", "tls"), ("tls", "h2c"), ("h2c", "tls"), ("h2c", "h2c")])
def test_mix(down, up, pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started, pki.server if up == "tls" else None)
    config = write_config(tmp_path, tls=server_tls(pki) if down == "tls" else None,
                          upstream_tls={"ca": pki.ca.cert} if up == "tls" else None)
    sc = procs.sidecar(server.port, extra=["--config", str(config)])
    ch = tls_channel(sc.addr, pki) if down == "tls" else make_channel(sc.addr)
    try:
        assert unary(ch, b"x" * 100_000) == b"x" * 100_000
        call = ch.unary_stream(STREAM, request_serializer=None, response_deserializer=None)
        got = list(call(b"", metadata=(("x-count", "20"), ("x-size", "70000")), timeout=10))
        assert len(got) == 20 and all(len(m) == 70000 for m in got)
    finally:
        ch.close()
    text = metrics_text(sc)
    for side, on in (("downstream", down == "tls"), ("upstream", up == "tls")):
        done = metric_sum(text, "insight_tls_handshakes_total", side=side)
        assert (done or 0) >= (1 if on else 0)
        if not on:
            assert not done
    assert metric_sum(text, "insight_tls_handshake_errors_total") in (None, 0)


# --------------------------------------------------------------------------
# mTLS
# --------------------------------------------------------------------------

def test_mtls_downstream(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    config = write_config(tmp_path, tls=server_tls(pki, client_ca=pki.ca.cert, require_client_cert=True))
    sc = procs.sidecar(server.port, extra=["--config", str(config)])

    ch = tls_channel(sc.addr, pki, client=pki.client)
    assert unary(ch) == b"hello"
    ch.close()

    for client, reason in ((None, "cert_required"), (pki.untrusted_client, "cert_untrusted")):
        before = tls_errors(sc, "downstream", reason)
        ch = tls_channel(sc.addr, pki, client=client)
        with pytest.raises(grpc.RpcError) as e:
            unary(ch, timeout=3)
        ch.close()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        wait_for(lambda: tls_errors(sc, "downstream", reason) > before, what=f"{reason} counted")
    assert "TLS handshake with client failed" in sc.log.read_text()


def test_mtls_upstream(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started, pki.server, client_ca=pki.ca.cert)
    with_cert = write_config(tmp_path, upstream_tls={"ca": pki.ca.cert, "cert": pki.client.cert,
                                                     "key": pki.client.key})
    sc = procs.sidecar(server.port, extra=["--config", str(with_cert)])
    ch = make_channel(sc.addr)
    assert unary(ch) == b"hello"
    ch.close()

    without = write_config(tmp_path, upstream_tls={"ca": pki.ca.cert})
    sc2 = procs.sidecar(server.port, extra=["--config", str(without)])
    ch = make_channel(sc2.addr)
    with pytest.raises(grpc.RpcError) as e:
        unary(ch, timeout=3)
    ch.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    text = metrics_text(sc2)
    assert (metric_sum(text, "insight_tls_handshake_errors_total", side="upstream") or 0) >= 1


# --------------------------------------------------------------------------
# ALPN, versions, resumption (openssl s_client)
# --------------------------------------------------------------------------

def test_s_client_alpn_versions_resumption(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, tls=server_tls(pki)))])
    ca = str(pki.ca.cert)

    out = s_client(sc.port, "-alpn", "h2", "-CAfile", ca, "-verify_return_error")
    assert "ALPN protocol: h2" in out and "TLSv1.3" in out and "Verify return code: 0 (ok)" in out

    out = s_client(sc.port, "-alpn", "h2", "-tls1_2", "-CAfile", ca)
    assert "ALPN protocol: h2" in out and "TLSv1.2" in out

    for alpn in (["-alpn", "http/1.1"], []):
        before = tls_errors(sc, "downstream", "no_alpn")
        out = s_client(sc.port, *alpn, "-CAfile", ca)
        assert "no application protocol" in out
        wait_for(lambda: tls_errors(sc, "downstream", "no_alpn") == before + 1, what="no_alpn counted")
    log = sc.log.read_text()
    assert "offered ALPN http/1.1" in log and "offered no ALPN" in log

    out = s_client(sc.port, "-alpn", "h2", "-tls1_1", "-CAfile", ca)
    assert "ALPN protocol: h2" not in out
    wait_for(lambda: tls_errors(sc, "downstream", "protocol_version") >= 1, what="protocol_version counted")

    # Session resumption: TLS 1.2 session ID cache and TLS 1.3 tickets.
    for version in ("-tls1_2", "-tls1_3"):
        sess = tmp_path / f"sess{version}"
        s_client(sc.port, "-alpn", "h2", version, "-CAfile", ca, "-sess_out", str(sess), hold=0.5)
        out = s_client(sc.port, "-alpn", "h2", version, "-CAfile", ca, "-sess_in", str(sess))
        assert "Reused," in out, out
    assert (metric_sum(metrics_text(sc), "insight_tls_sessions_resumed_total", side="downstream") or 0) >= 2


# --------------------------------------------------------------------------
# bad certificates
# --------------------------------------------------------------------------

@pytest.mark.parametrize("which,reason", [("expired", "cert_expired"), ("not_yet_valid", "cert_not_yet_valid"),
                                          ("untrusted", "cert_untrusted"), ("wrong_host", "hostname_mismatch")])
def test_bad_upstream_certificate(which, reason, pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started, getattr(pki, which))
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, upstream_tls={"ca": pki.ca.cert}))])
    ch = make_channel(sc.addr)
    with pytest.raises(grpc.RpcError) as e:
        unary(ch, timeout=3)
    ch.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_for(lambda: tls_errors(sc, "upstream", reason) >= 1, what=f"{reason} counted")
    log = sc.log.read_text()
    assert "TLS handshake with upstream failed" in log and f"reason={reason}" in log


@pytest.mark.parametrize("which,alert", [("expired", "certificate expired"), ("untrusted", "unknown ca"),
                                         ("wrong_host", "")])
def test_bad_downstream_certificate_rejected_by_client(which, alert, pki, tls_procs, tmp_path):
    """A client that rejects the sidecar's certificate: the alert it sends is counted."""
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, tls=server_tls(pki, getattr(pki, which))))])
    args = ["-alpn", "h2", "-CAfile", str(pki.ca.cert), "-verify_return_error"]
    if which == "wrong_host":
        args += ["-verify_hostname", "localhost"]
    out = s_client(sc.port, *args)
    assert "Verify return code: 0 (ok)" not in out
    wait_for(lambda: (metric_sum(metrics_text(sc), "insight_tls_handshake_errors_total", side="downstream") or 0) >= 1,
             what="client's alert counted")
    if alert:
        assert alert in sc.log.read_text()


def test_insecure_skip_verify_warns_and_connects(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started, pki.untrusted)
    config = write_config(tmp_path, upstream_tls={"insecure_skip_verify": True})
    sc = procs.sidecar(server.port, extra=["--config", str(config)])
    ch = make_channel(sc.addr)
    assert unary(ch) == b"hello"
    ch.close()
    assert "INSECURE" in sc.log.read_text()


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

def test_plaintext_to_tls_port(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, tls=server_tls(pki)))])
    ch = make_channel(sc.addr)
    with pytest.raises(grpc.RpcError):
        unary(ch, timeout=3)
    ch.close()
    got = send_and_drain(sc.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert got[:1] in (b"", b"\x15")  # nothing, or a TLS alert record
    wait_for(lambda: tls_errors(sc, "downstream", "not_tls") >= 2, what="not_tls counted")


def test_tls_to_plaintext_upstream(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)  # h2c
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, upstream_tls={"ca": pki.ca.cert}))])
    ch = make_channel(sc.addr)
    with pytest.raises(grpc.RpcError) as e:
        unary(ch, timeout=3)
    ch.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_for(lambda: tls_errors(sc, "upstream", "not_tls") + tls_errors(sc, "upstream", "truncated") >= 1,
             what="upstream failure counted")


def test_tls_to_plaintext_port(tls_procs):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    sc = procs.sidecar(server.port)
    got = send_and_drain(sc.port, client_hello(["h2"]))
    # The h2c side has already sent its SETTINGS; the last bytes are the alert (fatal handshake_failure).
    assert got.endswith(bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]))
    wait_for(lambda: tls_errors(sc, "downstream", "tls_on_plaintext_port") == 1, what="counted")
    assert "TLS handshake on the h2c listener refused" in sc.log.read_text()
    # h2c still works on that listener.
    ch = make_channel(sc.addr)
    assert unary(ch) == b"hello"
    ch.close()


def test_truncated_handshake(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, tls=server_tls(pki)))])
    hello = client_hello(["h2"])
    for cut in (20, len(hello) // 2, len(hello) - 1):
        with socket.create_connection(("127.0.0.1", sc.port), timeout=5) as s:
            s.sendall(hello[:cut])
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
    wait_for(lambda: tls_errors(sc, "downstream", "truncated") == 3, what="truncated counted")
    # A TCP connect without a byte (a port probe) is not a failed handshake.
    before = metric_sum(metrics_text(sc), "insight_tls_handshake_errors_total") or 0
    for _ in range(5):
        socket.create_connection(("127.0.0.1", sc.port)).close()
    time.sleep(0.3)
    assert (metric_sum(metrics_text(sc), "insight_tls_handshake_errors_total") or 0) == before


def test_memory_flat_across_10000_failed_handshakes(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, tls=server_tls(pki)))])
    payloads = [client_hello(["http/1.1"]), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", client_hello(["h2"])[:40]]

    def hammer(n: int, threads: int = 8):
        def work(k):
            for i in range(k, n, threads):
                data = payloads[i % len(payloads)]
                with socket.create_connection(("127.0.0.1", sc.port), timeout=5) as s:
                    s.sendall(data)
                    if i % len(payloads) == 2:
                        s.shutdown(socket.SHUT_WR)
                    try:
                        while s.recv(4096):
                            pass
                    except OSError:
                        pass
        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    hammer(1000)
    time.sleep(0.5)
    before = rss_kib(sc.popen.pid)
    start = time.monotonic()
    hammer(10_000)
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    after = rss_kib(sc.popen.pid)
    text = metrics_text(sc)
    total = metric_sum(text, "insight_tls_handshake_errors_total", side="downstream")
    assert total >= 11_000
    print(f"10000 failed handshakes in {elapsed:.1f}s; RSS {before} KiB -> {after} KiB")
    assert after - before < 4096, f"RSS grew {after - before} KiB across 10,000 failed handshakes"
    # Still serving.
    ch = tls_channel(sc.addr, pki)
    assert unary(ch) == b"hello"
    ch.close()


# --------------------------------------------------------------------------
# reload
# --------------------------------------------------------------------------

def served_serial(port: int, ca: Path) -> str:
    out = subprocess.run(
        f"openssl s_client -connect 127.0.0.1:{port} -alpn h2 -CAfile {ca} </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial", shell=True, capture_output=True, text=True, timeout=10).stdout
    return out.strip()


def cert_serial(path: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(path)],
                          capture_output=True, text=True).stdout.strip()


def test_reload_on_file_change_and_sighup(pki, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started)
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    sc = procs.sidecar(server.port, extra=["--config", str(write_config(tmp_path, tls={"cert": cert, "key": key}))])
    ca = pki.ca.cert
    assert served_serial(sc.port, ca) == cert_serial(pki.server.cert)
    old = tls_channel(sc.addr, pki)
    assert unary(old) == b"hello"

    # File change (polled): new connections get server2; the open connection keeps working.
    shutil.copy(pki.server2.key, key)
    shutil.copy(pki.server2.cert, cert)
    wait_for(lambda: served_serial(sc.port, ca) == cert_serial(pki.server2.cert), timeout=10,
             what="new certificate served")
    assert unary(old) == b"hello"

    # A broken file keeps the old certificate and says why.
    cert.write_text("not a certificate\n")
    wait_for(lambda: "TLS certificate reload failed" in sc.log.read_text(), timeout=10, what="reload failure logged")
    assert served_serial(sc.port, ca) == cert_serial(pki.server2.cert)
    assert "tls.cert" in sc.log.read_text()

    # SIGHUP reloads at once.
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    sc.signal(signal.SIGHUP)
    wait_for(lambda: served_serial(sc.port, ca) == cert_serial(pki.server.cert), timeout=10,
             what="certificate after SIGHUP")
    assert unary(old) == b"hello"
    old.close()
    text = metrics_text(sc)
    assert (metric_sum(text, "insight_tls_reloads_total", result="ok") or 0) >= 2
    assert (metric_sum(text, "insight_tls_reloads_total", result="failed") or 0) >= 1


# --------------------------------------------------------------------------
# configuration errors
# --------------------------------------------------------------------------

def check_config(config: Path):
    binary = require_sidecar()
    return subprocess.run([str(binary), "check-config", "--config", str(config), "--upstream", "127.0.0.1:1",
                           "--hop", "t", "--region", "r"], capture_output=True, text=True, timeout=10)


def test_check_config_reports_bad_files(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    cases = [
        ({"cert": pki.server.cert, "key": pki.server.key}, None, 0, "configuration ok"),
        ({"cert": garbage, "key": pki.server.key}, None, 2, "tls.cert"),
        ({"cert": tmp_path / "missing.pem", "key": pki.server.key}, None, 2, "tls.cert"),
        ({"cert": pki.server.cert, "key": pki.client.key}, None, 2, "tls.key"),
        ({"cert": pki.server.cert}, None, 2, "tls.key"),
        ({"cert": pki.server.cert, "key": pki.server.key, "require_client_cert": True}, None, 2, "tls.client_ca"),
        ({"cert": pki.server.cert, "key": pki.server.key, "client_ca": garbage}, None, 2, "tls.client_ca"),
        (None, {"ca": garbage}, 2, "upstream_tls.ca"),
        (None, {"cert": pki.client.cert}, 2, "upstream_tls.key"),
        (None, {"ca": pki.ca.cert, "cert": pki.client.cert, "key": pki.client.key}, 0, "configuration ok"),
        (None, {"bogus": 1}, 2, "upstream_tls.bogus"),
    ]
    for tls, up, code, text in cases:
        r = check_config(write_config(tmp_path, tls=tls, upstream_tls=up))
        assert r.returncode == code, (tls, up, r.stdout, r.stderr)
        assert text in (r.stdout + r.stderr), (tls, up, r.stdout, r.stderr)


# --------------------------------------------------------------------------
# certificate expiry: warnings and insight_tls_certificate_expiry_timestamp_seconds
# --------------------------------------------------------------------------

def openssl_time(seconds_from_now: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + seconds_from_now))


def not_after(path: Path) -> int:
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    import calendar
    return calendar.timegm(time.strptime(out.split("=", 1)[1], "%Y-%m-%d %H:%M:%SZ"))


def expiry_gauge(sc, **labels):
    return metric_sum(metrics_text(sc), "insight_tls_certificate_expiry_timestamp_seconds", **labels)


@pytest.fixture(scope="session")
def soon(pki):
    """A serving certificate that expires in 5 days, and a client certificate in 3."""
    local = "DNS:localhost,IP:127.0.0.1"
    return (pki.ca.issue("soon", "soon.localhost", local, end=openssl_time(5 * 86400 + 600)),
            pki.ca.issue("soon-client", "soon-client", usage="clientAuth", end=openssl_time(3 * 86400 + 600)))


def test_check_config_warns_on_expired_and_expiring_certificates(pki, soon, tmp_path):
    soon_server, soon_client = soon
    r = check_config(write_config(tmp_path, tls=server_tls(pki, pki.expired)))
    assert r.returncode == 0, r.stderr
    assert f"warning: tls.cert ({pki.expired.cert}): certificate CN=localhost expired on 2001-01-01T00:00:00Z" \
        in r.stdout, r.stdout
    r = check_config(write_config(tmp_path, tls=server_tls(pki, soon_server), upstream_tls={
        "ca": pki.ca.cert, "cert": soon_client.cert, "key": soon_client.key}))
    assert r.returncode == 0, r.stderr
    assert "warning: tls.cert" in r.stdout and "CN=soon.localhost expires on" in r.stdout and "in 5 days" in r.stdout, \
        r.stdout
    assert "warning: upstream_tls.cert" in r.stdout and "in 3 days" in r.stdout, r.stdout
    r = check_config(write_config(tmp_path, tls=server_tls(pki)))
    assert "warning" not in r.stdout, r.stdout


def test_expired_serving_certificate_warned_at_start_and_exported(pki, soon, tls_procs, tmp_path):
    procs, started = tls_procs
    server = start_tls_grpc_server(started, pki.server)
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(pki.expired.cert, cert)
    shutil.copy(pki.expired.key, key)
    soon_server, soon_client = soon
    config = write_config(tmp_path, tls={"cert": cert, "key": key},
                          upstream_tls={"ca": pki.ca.cert, "cert": soon_client.cert, "key": soon_client.key})
    sc = procs.sidecar(server.port, extra=["--config", str(config)])
    log = sc.log.read_text()
    assert "warning" in log and "tls.cert" in log and "expired on 2001-01-01T00:00:00Z" in log, log
    assert "upstream_tls.cert" in log and "in 3 days" in log, log
    assert expiry_gauge(sc, side="downstream", field="tls.cert", subject="localhost") == not_after(pki.expired.cert)
    assert expiry_gauge(sc, side="upstream", field="upstream_tls.cert", subject="soon-client") == \
        not_after(soon_client.cert)
    assert expiry_gauge(sc, side="upstream", field="upstream_tls.ca", subject="ca") == not_after(pki.ca.cert)

    # Reload with a certificate that expires in 5 days: the gauge follows and the reload warns.
    shutil.copy(soon_server.key, key)
    shutil.copy(soon_server.cert, cert)
    sc.signal(signal.SIGHUP)
    wait_for(lambda: expiry_gauge(sc, field="tls.cert", subject="soon.localhost") == not_after(soon_server.cert),
             timeout=10, what="expiry gauge after reload")
    assert expiry_gauge(sc, field="tls.cert", subject="localhost") is None
    wait_for(lambda: "CN=soon.localhost expires on" in sc.log.read_text(), what="reload warning")

    # A renewed certificate: no further warning for tls.cert.
    shutil.copy(pki.server.key, key)
    shutil.copy(pki.server.cert, cert)
    mark = len(sc.log.read_text())
    sc.signal(signal.SIGHUP)
    wait_for(lambda: expiry_gauge(sc, field="tls.cert") == not_after(pki.server.cert), timeout=10,
             what="expiry gauge after renewal")
    time.sleep(0.2)
    assert "] tls.cert (" not in sc.log.read_text()[mark:]
    assert "] upstream_tls.cert (" in sc.log.read_text()[mark:]
