"""Plain HTTP/2 (non-gRPC) traffic through the sidecar: nghttpd upstream,
h2load and nghttp clients. Each case also runs directly against nghttpd."""

import hashlib
import re
import shutil
import subprocess
import time

import pytest

from conftest import _spawn, _wait_until, _ALL_PROCS, free_port, start_sidecar, tcp_connectable

SMALL = 1024
BIG = 1024 * 1024
UPLOAD = 64 * 1024 + 7


def _bytes(n: int, seed: bytes) -> bytes:
    out = bytearray()
    block = seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (apt-get install nghttp2-client nghttp2-server)")


@pytest.fixture(scope="module")
def docroot(tmp_path_factory):
    d = tmp_path_factory.mktemp("htdocs")
    (d / "small.bin").write_bytes(_bytes(SMALL, b"small"))
    (d / "big.bin").write_bytes(_bytes(BIG, b"big"))
    (d / "index.html").write_bytes(b"<html>insight e2e</html>\n")
    up = tmp_path_factory.mktemp("upload") / "upload.bin"
    up.write_bytes(_bytes(UPLOAD, b"upload"))
    return d, up


@pytest.fixture(scope="module")
def nghttpd(docroot):
    _need("nghttpd")
    d, _ = docroot
    port = free_port()
    proc = _spawn("nghttpd", ["nghttpd", "--no-tls", "-a", "127.0.0.1", "-d", str(d),
                              "--echo-upload", str(port)], port)
    _wait_until(proc, lambda: tcp_connectable(port), f"nghttpd listening on {port}")
    yield proc
    proc.stop()
    _ALL_PROCS.remove(proc)


@pytest.fixture(scope="module")
def nghttpd_sidecar(nghttpd):
    sc = start_sidecar(nghttpd.port)
    yield sc
    sc.stop(timeout=10)
    if sc in _ALL_PROCS:
        _ALL_PROCS.remove(sc)


@pytest.fixture(params=["direct", "sidecar"])
def h2_port(request, nghttpd):
    if request.param == "direct":
        return nghttpd.port
    sc = request.getfixturevalue("nghttpd_sidecar")
    assert sc.alive(), f"sidecar died:\n{sc.log_tail()}"
    return sc.port


def run(argv, timeout=90):
    start = time.monotonic()
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return res, time.monotonic() - start


def parse_h2load(out: str) -> dict:
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert m, f"cannot parse h2load output:\n{out}"
    keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    r = dict(zip(keys, map(int, m.groups())))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m, f"cannot parse status codes:\n{out}"
    r.update(zip(["2xx", "3xx", "4xx", "5xx"], map(int, m.groups())))
    m = re.search(r"traffic: .*?, .*? headers .*?, .*?\((\d+)\) data", out)
    r["data"] = int(m.group(1)) if m else None
    return r


@pytest.mark.parametrize("path,n,c,m,size", [
    ("/small.bin", 2000, 4, 10, SMALL),
    ("/big.bin", 100, 2, 4, BIG),
])
def test_h2load_get(h2_port, path, n, c, m, size):
    _need("h2load")
    res, elapsed = run(["h2load", "-n", str(n), "-c", str(c), "-m", str(m),
                        f"http://127.0.0.1:{h2_port}{path}"])
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out + res.stderr.decode("utf-8", "replace")
    r = parse_h2load(out)
    assert r["failed"] == 0 and r["errored"] == 0 and r["timeout"] == 0, out
    assert r["succeeded"] == n == r["total"] == r["done"], out
    assert r["2xx"] == n, out
    assert r["data"] == n * size, out


def test_h2load_post(h2_port, docroot):
    _need("h2load")
    _, up = docroot
    n = 300
    res, _ = run(["h2load", "-n", str(n), "-c", "3", "-m", "5", "-d", str(up),
                  f"http://127.0.0.1:{h2_port}/upload"])
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out + res.stderr.decode("utf-8", "replace")
    r = parse_h2load(out)
    assert r["failed"] == 0 and r["errored"] == 0 and r["timeout"] == 0, out
    assert r["succeeded"] == n, out
    assert r["2xx"] == n, out
    # nghttpd --echo-upload sends the body back
    assert r["data"] == n * UPLOAD, out


@pytest.mark.parametrize("name", ["small.bin", "big.bin", "index.html"])
def test_nghttp_get_body_identical(h2_port, docroot, name):
    _need("nghttp")
    d, _ = docroot
    res, _ = run(["nghttp", f"http://127.0.0.1:{h2_port}/{name}"], timeout=30)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    assert res.stdout == (d / name).read_bytes()


def test_nghttp_post_echo_identical(h2_port, docroot):
    _need("nghttp")
    _, up = docroot
    res, _ = run(["nghttp", "-d", str(up), f"http://127.0.0.1:{h2_port}/echo"], timeout=30)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    assert res.stdout == up.read_bytes()


def test_nghttp_404_passthrough(h2_port):
    _need("nghttp")
    res, _ = run(["nghttp", "-v", f"http://127.0.0.1:{h2_port}/does-not-exist"], timeout=30)
    statuses = re.findall(r"recv \(stream_id=\d+\) :status: (\d+)", res.stdout.decode("utf-8", "replace"))
    assert statuses == ["404"], res.stdout.decode("utf-8", "replace")
