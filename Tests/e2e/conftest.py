"""Fixtures for the Insight end-to-end suite.

Every test that takes the ``target`` fixture runs twice: ``[direct]`` against
the test server itself and ``[sidecar]`` through ``insight-sidecar``.

Environment:
  INSIGHT_SIDECAR          path of the sidecar binary
                           (default <repo>/.build/debug/insight-sidecar)
  INSIGHT_REQUIRE_SIDECAR  "1": a missing binary is a failure, not a skip
"""

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional

import grpc
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVER_SCRIPT = HERE / "grpc_server.py"
MAX_MSG = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
    ("grpc.enable_http_proxy", 0),
    ("grpc.enable_retries", 0),
]
STARTUP_TIMEOUT = 10.0
LOG_DIR = Path(os.environ.get("INSIGHT_E2E_LOG_DIR") or tempfile.mkdtemp(prefix="insight-e2e-"))

# Make grpc_server importable for helpers (payload generator etc.).
sys.path.insert(0, str(HERE))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_connectable(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(port: int, path: str, timeout: float = 2.0):
    """Plain HTTP/1.1 GET against the admin port -> (status, body text)."""
    url = f"http://127.0.0.1:{port}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str):
    """Prometheus text format -> list of (name, {label: value}, float)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        labels = dict(_LABEL_RE.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        samples.append((m.group(1), labels, value))
    return samples


def metric_sum(text: str, name: str, **labels) -> Optional[float]:
    """Sum of all samples of ``name`` whose labels include ``labels``;
    None if there is no such sample at all."""
    values = [v for n, lab, v in parse_metrics(text)
              if n == name and all(lab.get(k) == want for k, want in labels.items())]
    return sum(values) if values else None


def tail(path: Path, lines: int = 60) -> str:
    try:
        data = path.read_text("utf-8", "replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(data[-lines:])


def sidecar_binary() -> Path:
    return Path(os.environ.get("INSIGHT_SIDECAR") or REPO / ".build/debug/insight-sidecar")


def require_sidecar() -> Path:
    """Return the binary path, or skip (fail under INSIGHT_REQUIRE_SIDECAR=1)."""
    path = sidecar_binary()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    msg = (f"insight-sidecar binary not found at {path} "
           "(build it with `swift build` or set INSIGHT_SIDECAR)")
    if os.environ.get("INSIGHT_REQUIRE_SIDECAR") == "1":
        pytest.fail(msg + " and INSIGHT_REQUIRE_SIDECAR=1", pytrace=False)
    pytest.skip(msg)


def make_channel(addr: str) -> grpc.Channel:
    return grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

_ALL_PROCS: List["Proc"] = []


@dataclasses.dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    port: int

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)


def _spawn(name: str, argv: List[str], port: int) -> Proc:
    log = LOG_DIR / f"{name}-{port}-{int(time.time() * 1000)}.log"
    fh = open(log, "wb")
    popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=str(REPO))
    fh.close()
    proc = Proc(name, popen, log, port)
    _ALL_PROCS.append(proc)
    return proc


def _wait_until(proc: Proc, ready, what: str, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with code {proc.popen.returncode} before {what};"
                f" log {proc.log}:\n{proc.log_tail()}")
        if ready():
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{proc.name} not ready ({what}) within {timeout}s;"
                       f" log {proc.log}:\n{proc.log_tail()}")


def start_grpc_server(port: Optional[int] = None) -> Proc:
    port = port or free_port()
    proc = _spawn("grpc-server", [sys.executable, "-u", str(SERVER_SCRIPT), "--port", str(port)], port)
    _wait_until(proc, lambda: "listening on" in tail(proc.log, 5) and tcp_connectable(port),
                f"listening on {port}")
    return proc


@dataclasses.dataclass
class Sidecar(Proc):
    admin_port: int = 0
    upstream_port: int = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_sidecar(upstream_port: int, drain_timeout: str = "5s",
                  extra: Optional[List[str]] = None) -> Sidecar:
    binary = require_sidecar()
    port, admin = free_port(), free_port()
    while admin == port:
        admin = free_port()
    argv = [str(binary), "run",
            "--listen", f"127.0.0.1:{port}",
            "--upstream", f"127.0.0.1:{upstream_port}",
            "--hop", "test", "--region", "local",
            "--admin", f"127.0.0.1:{admin}",
            "--drain-timeout", drain_timeout,
            "--log-level", "debug"] + (extra or [])
    base = _spawn("sidecar", argv, port)
    _ALL_PROCS.remove(base)
    sc = Sidecar(base.name, base.popen, base.log, port, admin, upstream_port)
    _ALL_PROCS.append(sc)

    def ready():
        if not tcp_connectable(port):
            return False
        try:
            status, _ = http_get(admin, "/healthz", timeout=0.5)
        except OSError:
            return False
        return status == 200

    error = None
    try:
        _wait_until(sc, ready, f"accepting on {port} with /healthz 200 on {admin}")
    except RuntimeError as e:
        error = str(e)
    if error:
        pytest.fail(error, pytrace=False)
    return sc


# --------------------------------------------------------------------------
# reporting: attach sidecar log tails to failing tests
# --------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and "[direct" not in item.nodeid:
        for proc in _ALL_PROCS:
            if isinstance(proc, Sidecar):
                rep.sections.append(
                    (f"sidecar :{proc.port} log tail ({proc.log})", proc.log_tail(80)))


def pytest_sessionfinish(session, exitstatus):
    for proc in list(_ALL_PROCS):
        try:
            proc.kill()
        except Exception:
            pass


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def port_picker():
    return free_port


@pytest.fixture(scope="session")
def grpc_server():
    proc = start_grpc_server()
    yield proc
    proc.stop()
    _ALL_PROCS.remove(proc)


@pytest.fixture(scope="session")
def grpc_sidecar(grpc_server):
    sc = start_sidecar(grpc_server.port)
    yield sc
    sc.stop(timeout=10)
    if sc in _ALL_PROCS:
        _ALL_PROCS.remove(sc)


@dataclasses.dataclass
class Target:
    mode: str            # "direct" or "sidecar"
    addr: str            # address the client should dial
    direct_addr: str     # the test server itself (for comparisons)
    sidecar: Optional[Sidecar] = None

    @property
    def via_sidecar(self) -> bool:
        return self.mode == "sidecar"


@pytest.fixture(params=["direct", "sidecar"])
def target(request, grpc_server) -> Target:
    direct = f"127.0.0.1:{grpc_server.port}"
    if request.param == "direct":
        return Target("direct", direct, direct)
    sc = request.getfixturevalue("grpc_sidecar")
    if not sc.alive():
        pytest.fail(f"session sidecar died (code {sc.popen.returncode}):\n{sc.log_tail()}",
                    pytrace=False)
    return Target("sidecar", sc.addr, direct, sc)


@pytest.fixture
def channel(target):
    ch = make_channel(target.addr)
    yield ch
    ch.close()


@pytest.fixture
def procs():
    """Factory for per-test processes; everything is killed at teardown."""
    started: List[Proc] = []

    class Factory:
        def grpc_server(self, port=None) -> Proc:
            p = start_grpc_server(port)
            started.append(p)
            return p

        def sidecar(self, upstream_port, **kw) -> Sidecar:
            p = start_sidecar(upstream_port, **kw)
            started.append(p)
            return p

    yield Factory()
    for p in started:
        p.kill()
        if p in _ALL_PROCS:
            _ALL_PROCS.remove(p)


# --------------------------------------------------------------------------
# hop timing (test_timing.py, test_prometheus.py): named sidecars, nghttpx,
# the WAN relay, small in-process HTTP/2 servers and an HTTP/2 client
# --------------------------------------------------------------------------

import asyncio  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402

WAN_RELAY_SCRIPT = HERE / "wan_relay.py"
TEST_SERVICE = "/insight.test.v1.Test/"


def start_hop_sidecar(upstream_port: int, hop: str, region: str,
                      extra: Optional[List[str]] = None) -> Sidecar:
    """A sidecar with its own --hop/--region (``start_sidecar`` uses test/local)."""
    binary = require_sidecar()
    port, admin = free_port(), free_port()
    while admin == port:
        admin = free_port()
    argv = [str(binary), "run",
            "--listen", f"127.0.0.1:{port}",
            "--upstream", f"127.0.0.1:{upstream_port}",
            "--hop", hop, "--region", region,
            "--admin", f"127.0.0.1:{admin}",
            "--drain-timeout", "1s"] + (extra or [])
    base = _spawn(f"sidecar-{hop}", argv, port)
    _ALL_PROCS.remove(base)
    sc = Sidecar(base.name, base.popen, base.log, port, admin, upstream_port)
    _ALL_PROCS.append(sc)

    def ready():
        if not tcp_connectable(port):
            return False
        try:
            status, _ = http_get(admin, "/healthz", timeout=0.5)
        except OSError:
            return False
        return status == 200

    try:
        _wait_until(sc, ready, f"accepting on {port} with /healthz 200 on {admin}")
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    return sc


def require_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if not path:
        pytest.skip(f"{name} not installed")
    return path


def start_nghttpx(backend_port: int) -> Proc:
    """nghttpx as a third-party h2c -> h2c hop (one worker, no config file)."""
    exe = require_tool("nghttpx")
    port = free_port()
    proc = _spawn("nghttpx", [exe, "--conf=/dev/null",
                              f"--frontend=127.0.0.1,{port};no-tls",
                              f"--backend=127.0.0.1,{backend_port};;proto=h2",
                              "--workers=1", "--no-ocsp", "--log-level=WARN"], port)
    _wait_until(proc, lambda: tcp_connectable(port), f"nghttpx listening on {port}")
    return proc


def start_nghttpd(docroot: Path, extra: Optional[List[str]] = None) -> Proc:
    exe = require_tool("nghttpd")
    port = free_port()
    proc = _spawn("nghttpd", [exe, "--no-tls", "-a", "127.0.0.1", "-d", str(docroot)]
                  + (extra or []) + [str(port)], port)
    _wait_until(proc, lambda: tcp_connectable(port), f"nghttpd listening on {port}")
    return proc


def start_wan_relay(target_port: int, delay_ms: float) -> Proc:
    """wan_relay.py in its own process (no GIL sharing with the test's client)."""
    port = free_port()
    proc = _spawn("wan-relay", [sys.executable, "-u", str(WAN_RELAY_SCRIPT),
                                "--listen", f"127.0.0.1:{port}",
                                "--target", f"127.0.0.1:{target_port}",
                                "--delay-ms", str(delay_ms)], port)
    _wait_until(proc, lambda: "listening on" in tail(proc.log, 5) and tcp_connectable(port),
                f"wan relay listening on {port}")
    return proc


def scrape(sc: Sidecar, accept: Optional[str] = None, timeout: float = 3.0):
    """GET /metrics -> (content-type, body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{sc.admin_port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as resp:
        return resp.headers.get("content-type", ""), resp.read().decode("utf-8", "replace")


def metrics_text(sc: Sidecar) -> str:
    return scrape(sc)[1]


# ---- structured field lists (just what insight-* headers use) -------------

_SF_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_SF_NUMBER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")
_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")


class SFError(ValueError):
    pass


def parse_sf_list(value: str):
    """RFC 8941 List of Items -> [(bare_item, {param: value})]. Bare items:
    str for tokens and strings, int/float for numbers, bool for booleans.
    Inner lists and byte sequences are rejected (the insight headers use none)."""
    s, i, out = value, 0, []

    def ws(i, chars=" "):
        while i < len(s) and s[i] in chars:
            i += 1
        return i

    def bare(i):
        if i >= len(s):
            raise SFError("end of input")
        c = s[i]
        if c == '"':
            j, buf = i + 1, []
            while j < len(s):
                if s[j] == "\\":
                    buf.append(s[j + 1])
                    j += 2
                elif s[j] == '"':
                    return "".join(buf), j + 1
                else:
                    buf.append(s[j])
                    j += 1
            raise SFError("unterminated string")
        if c == "?":
            return s[i + 1] == "1", i + 2
        if c == "-" or c.isdigit():
            m = _SF_NUMBER.match(s, i)
            if not m:
                raise SFError(f"bad number at {i}")
            t = m.group(0)
            return (float(t) if "." in t else int(t)), m.end()
        m = _SF_TOKEN.match(s, i)
        if not m:
            raise SFError(f"unexpected {c!r} at {i}")
        return m.group(0), m.end()

    i = ws(i)
    while i < len(s):
        item, i = bare(i)
        params = {}
        while i < len(s) and s[i] == ";":
            i = ws(i + 1)
            m = _SF_KEY.match(s, i)
            if not m:
                raise SFError(f"bad key at {i}")
            key, i = m.group(0), m.end()
            if i < len(s) and s[i] == "=":
                params[key], i = bare(i + 1)
            else:
                params[key] = True
        out.append((item, params))
        i = ws(i, " \t")
        if i >= len(s):
            break
        if s[i] != ",":
            raise SFError(f"expected ',' at {i}")
        i = ws(i + 1, " \t")
        if i >= len(s):
            raise SFError("trailing comma")
    return out


# ---- small in-process HTTP/2 servers (asyncio + h2, on a background loop) --

class _LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="h2-helpers", daemon=True)
        self.thread.start()

    def run(self, coro, timeout=5.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _h2_config(client_side: bool):
    import h2.config
    return h2.config.H2Configuration(client_side=client_side, header_encoding=None,
                                     validate_inbound_headers=False,
                                     validate_outbound_headers=False,
                                     normalize_outbound_headers=False,
                                     normalize_inbound_headers=False)


class _H2Conn:
    """One h2 connection over asyncio streams; ``settings`` go in its first SETTINGS frame (a
    limit sent later races the peer's first streams)."""

    def __init__(self, reader, writer, client_side: bool, settings=None):
        import h2.connection
        import h2.settings
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(config=_h2_config(client_side))
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def events(self):
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            for ev in self.conn.receive_data(data):
                yield ev
            self.flush()


class H2ServerBase:
    """asyncio h2c server on 127.0.0.1; subclasses implement ``serve``."""

    def __init__(self, helpers: _LoopThread):
        self.helpers = helpers
        self.port = None
        self._server = None
        self.errors: List[str] = []

    async def _start(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self):
        self.helpers.run(self._start())
        return self

    async def _handle(self, reader, writer):
        try:
            await self.serve(reader, writer)
        except Exception as e:  # kept for assertions / debugging
            self.errors.append(repr(e))
        finally:
            writer.close()

    async def serve(self, reader, writer):
        raise NotImplementedError

    def stop(self):
        async def close():
            self._server.close()
        try:
            self.helpers.run(close())
        except Exception:
            pass


class FakeGrpcUpstream(H2ServerBase):
    """Answers every request like a gRPC server: one empty message, then
    trailers ``grpc-status: 0`` plus ``self.timing`` as ``insight-timing``
    (if set) and ``self.extra_trailers``; ``self.chain`` as ``insight-chain``
    response header (if set). Records each request's headers in ``self.requests``."""

    def __init__(self, helpers):
        super().__init__(helpers)
        self.timing: Optional[str] = None
        self.chain: Optional[str] = None
        self.extra_trailers: List[tuple] = []
        self.requests: List[List[tuple]] = []

    async def serve(self, reader, writer):
        import h2.events as ev
        c = _H2Conn(reader, writer, client_side=False)
        async for e in c.events():
            if isinstance(e, ev.RequestReceived):
                self.requests.append([(k.decode("latin-1"), v.decode("latin-1")) for k, v in e.headers])
            elif isinstance(e, ev.DataReceived):
                c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            if isinstance(e, ev.StreamEnded) or (isinstance(e, ev.RequestReceived) and e.stream_ended):
                sid = e.stream_id
                hdrs = [(":status", "200"), ("content-type", "application/grpc")]
                if self.chain is not None:
                    hdrs.append(("insight-chain", self.chain))
                c.conn.send_headers(sid, hdrs)
                c.conn.send_data(sid, b"\x00\x00\x00\x00\x00")
                trailers = [("grpc-status", "0")] + list(self.extra_trailers)
                if self.timing is not None:
                    trailers.append(("insight-timing", self.timing))
                c.conn.send_headers(sid, trailers, end_stream=True)
            c.flush()


class TrailerFilterProxy(H2ServerBase):
    """A third-party hop that drops response trailer fields it does not know:
    h2c -> h2c, one upstream connection per downstream connection, trailers
    reduced to ``keep`` (default grpc-status and grpc-message)."""

    def __init__(self, helpers, upstream_port: int, keep=("grpc-status", "grpc-message")):
        super().__init__(helpers)
        self.upstream_port = upstream_port
        self.keep = {k.encode() for k in keep}
        self.dropped: List[bytes] = []

    async def serve(self, reader, writer):
        import h2.events as ev
        down = _H2Conn(reader, writer, client_side=False)
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up = _H2Conn(ur, uw, client_side=True)
        d2u, u2d = {}, {}

        async def upstream_loop():
            try:
                async for e in up.events():
                    sid = u2d.get(getattr(e, "stream_id", None))
                    if sid is None:
                        continue
                    if isinstance(e, ev.ResponseReceived):
                        down.conn.send_headers(sid, e.headers, end_stream=bool(e.stream_ended))
                    elif isinstance(e, ev.DataReceived):
                        up.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                        down.conn.send_data(sid, e.data, end_stream=bool(e.stream_ended))
                    elif isinstance(e, ev.TrailersReceived):
                        kept = [(k, v) for k, v in e.headers if k in self.keep]
                        self.dropped += [k for k, v in e.headers if k not in self.keep]
                        down.conn.send_headers(sid, kept, end_stream=True)
                    elif isinstance(e, ev.StreamReset):
                        down.conn.reset_stream(sid, e.error_code)
                    down.flush()
                    up.flush()
            finally:
                writer.close()

        ut = asyncio.ensure_future(upstream_loop())
        try:
            async for e in down.events():
                sid = getattr(e, "stream_id", None)
                if isinstance(e, ev.RequestReceived):
                    usid = up.conn.get_next_available_stream_id()
                    d2u[sid], u2d[usid] = usid, sid
                    up.conn.send_headers(usid, e.headers, end_stream=bool(e.stream_ended))
                elif isinstance(e, ev.DataReceived):
                    down.conn.acknowledge_received_data(e.flow_controlled_length, sid)
                    up.conn.send_data(d2u[sid], e.data, end_stream=bool(e.stream_ended))
                elif isinstance(e, ev.TrailersReceived):
                    up.conn.send_headers(d2u[sid], e.headers, end_stream=True)
                elif isinstance(e, ev.StreamReset) and sid in d2u:
                    up.conn.reset_stream(d2u[sid], e.error_code)
                up.flush()
                down.flush()
        finally:
            ut.cancel()
            uw.close()


def h2_request(port: int, headers: List[tuple], body: bytes = b"", timeout: float = 5.0):
    """One HTTP/2 (h2c, prior knowledge) request -> (headers, body, trailers or None).
    Header names/values are str."""
    import h2.connection
    import h2.events as ev
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        c = h2.connection.H2Connection(config=_h2_config(True))
        c.initiate_connection()
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, headers, end_stream=not body)
        if body:
            c.send_data(sid, body, end_stream=True)
        sock.sendall(c.data_to_send())
        resp, data, trailers = None, b"", None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            done = False
            for e in c.receive_data(chunk):
                if isinstance(e, ev.ResponseReceived):
                    resp = [(k.decode(), v.decode()) for k, v in e.headers]
                elif isinstance(e, ev.DataReceived):
                    data += e.data
                    c.acknowledge_received_data(e.flow_controlled_length, sid)
                elif isinstance(e, ev.TrailersReceived):
                    trailers = [(k.decode(), v.decode()) for k, v in e.headers]
                elif isinstance(e, ev.StreamReset):
                    raise RuntimeError(f"stream reset {e.error_code}")
                if isinstance(e, ev.StreamEnded) or getattr(e, "stream_ended", None):
                    done = True
            sock.sendall(c.data_to_send())
            if done:
                return resp, data, trailers
        raise TimeoutError("no complete response")
    finally:
        sock.close()


@pytest.fixture(scope="session")
def h2_helpers():
    lt = _LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def hop_procs(h2_helpers):
    """Factory for hop-timing topologies; everything is stopped at teardown."""
    started: List[Proc] = []
    servers: List[H2ServerBase] = []

    def keep(p):
        started.append(p)
        return p

    class Factory:
        def grpc_server(self) -> Proc:
            return keep(start_grpc_server())

        def sidecar(self, upstream_port, hop, region, extra=None) -> Sidecar:
            return keep(start_hop_sidecar(upstream_port, hop, region, extra))

        def nghttpx(self, backend_port) -> Proc:
            return keep(start_nghttpx(backend_port))

        def nghttpd(self, docroot, extra=None) -> Proc:
            return keep(start_nghttpd(docroot, extra))

        def relay(self, target_port, delay_ms) -> Proc:
            return keep(start_wan_relay(target_port, delay_ms))

        def fake_grpc_upstream(self) -> FakeGrpcUpstream:
            s = FakeGrpcUpstream(h2_helpers).start()
            servers.append(s)
            return s

        def trailer_filter(self, upstream_port, **kw) -> TrailerFilterProxy:
            s = TrailerFilterProxy(h2_helpers, upstream_port, **kw).start()
            servers.append(s)
            return s

    yield Factory()
    for s in servers:
        s.stop()
    for p in reversed(started):
        p.kill()
        if p in _ALL_PROCS:
            _ALL_PROCS.remove(p)


@dataclasses.dataclass
class TimingChain:
    """client -> mediary-a sidecar -> nghttpx (Mediary A) -> WAN relay ->
    mediary-b sidecar -> nghttpx (Mediary B) -> gateway-b sidecar ->
    nghttpx (Gateway B) -> grpc_server.py"""
    server: Proc
    gateway_b: Sidecar
    mediary_b: Sidecar
    mediary_a: Sidecar
    relay: Proc
    nghttpx: List[Proc]
    wan_delay_ms: float
    # Ground truth for the mediary-a segment: nghttpx -> relay -> service,
    # the same third-party path without sidecars.
    calibration: List[Proc] = dataclasses.field(default_factory=list)

    @property
    def sidecars(self) -> List[Sidecar]:
        return [self.mediary_a, self.mediary_b, self.gateway_b]

    @property
    def addr(self) -> str:
        return self.mediary_a.addr

    @property
    def direct_addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def calibration_addr(self) -> str:
        return f"127.0.0.1:{self.calibration[-1].port}"

    def check_alive(self):
        for p in [self.server, self.relay, *self.nghttpx, *self.sidecars, *self.calibration]:
            if not p.alive():
                pytest.fail(f"{p.name} died (code {p.popen.returncode}):\n{p.log_tail()}", pytrace=False)


WAN_DELAY_MS = 20.0


@pytest.fixture(scope="session")
def timing_chain():
    require_sidecar()
    require_tool("nghttpx")
    mine: List[Proc] = []

    def keep(p):
        mine.append(p)
        return p

    try:
        server = keep(start_grpc_server())
        ngx_gb = keep(start_nghttpx(server.port))
        gb = keep(start_hop_sidecar(ngx_gb.port, "gateway-b", "b"))
        ngx_mb = keep(start_nghttpx(gb.port))
        mb = keep(start_hop_sidecar(ngx_mb.port, "mediary-b", "b"))
        relay = keep(start_wan_relay(mb.port, WAN_DELAY_MS))
        ngx_ma = keep(start_nghttpx(relay.port))
        ma = keep(start_hop_sidecar(ngx_ma.port, "mediary-a", "a"))
        cal_relay = keep(start_wan_relay(server.port, WAN_DELAY_MS))
        cal_ngx = keep(start_nghttpx(cal_relay.port))
        yield TimingChain(server, gb, mb, ma, relay, [ngx_ma, ngx_mb, ngx_gb], WAN_DELAY_MS,
                          [cal_relay, cal_ngx])
    finally:
        for p in reversed(mine):
            p.kill()
            if p in _ALL_PROCS:
                _ALL_PROCS.remove(p)


# --------------------------------------------------------------------------
# probes (test_probes.py, bench_probes.py): sidecars from a config file,
# test servers with flags, the one-shot `probe` command, bounded waits
# --------------------------------------------------------------------------

import json as _json  # noqa: E402


def start_grpc_server_args(extra: Optional[List[str]] = None, port: Optional[int] = None) -> Proc:
    """grpc_server.py with extra flags (e.g. ``--health-delay-ms 1000``)."""
    port = port or free_port()
    proc = _spawn("grpc-server", [sys.executable, "-u", str(SERVER_SCRIPT), "--port", str(port)]
                  + (extra or []), port)
    _wait_until(proc, lambda: "listening on" in tail(proc.log, 5) and tcp_connectable(port),
                f"listening on {port}")
    return proc


def grpc_unary(port: int, method: str, payload: bytes = b"", timeout: float = 5.0) -> bytes:
    """One raw-bytes unary call to ``/insight.test.v1.Test/<method>`` on 127.0.0.1:port."""
    ch = make_channel(f"127.0.0.1:{port}")
    try:
        return ch.unary_unary(f"{TEST_SERVICE}{method}")(payload, timeout=timeout)
    finally:
        ch.close()


def set_server_health(port: int, service: str = "", status: Optional[str] = None,
                      delay_ms: Optional[int] = None) -> None:
    """grpc_server.py SetHealth: status SERVING / NOT_SERVING / ..., health check delay."""
    req = {"service": service}
    if status is not None:
        req["status"] = status
    if delay_ms is not None:
        req["delay_ms"] = delay_ms
    grpc_unary(port, "SetHealth", _json.dumps(req).encode())


def server_counts(port: int) -> dict:
    """grpc_server.py Counts: {full method: calls seen}."""
    return _json.loads(grpc_unary(port, "Counts").decode())


def wait_for(pred, timeout: float, what: str, interval: float = 0.05):
    """Poll ``pred`` until it returns a truthy value (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except (OSError, urllib.error.URLError) as e:  # a scrape that failed: try again
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def write_sidecar_config(cfg: dict, name: str) -> Path:
    """A config file for ``--config`` (JSON is YAML)."""
    path = LOG_DIR / f"{name}-{int(time.time() * 1000)}.yaml"
    path.write_text(_json.dumps(cfg, indent=2))
    return path


def start_config_sidecar(cfg: dict, name: str = "sidecar-probe", extra: Optional[List[str]] = None,
                         binary: Optional[Path] = None, ready_timeout: float = STARTUP_TIMEOUT) -> Sidecar:
    """A sidecar from a config dict (``listen``/``admin`` filled in if missing; ``upstream``
    as HOST:PORT or an int port) started with ``run --config FILE``."""
    binary = binary or require_sidecar()
    cfg = dict(cfg)
    if isinstance(cfg.get("upstream"), int):
        cfg["upstream"] = f"127.0.0.1:{cfg['upstream']}"
    port = int(cfg["listen"].rsplit(":", 1)[1]) if "listen" in cfg else free_port()
    admin = int(cfg["admin"].rsplit(":", 1)[1]) if "admin" in cfg else free_port()
    while admin == port:
        admin = free_port()
    cfg.setdefault("listen", f"127.0.0.1:{port}")
    cfg.setdefault("admin", f"127.0.0.1:{admin}")
    cfg.setdefault("drain_timeout", "1s")
    path = write_sidecar_config(cfg, name)
    base = _spawn(name, [str(binary), "run", "--config", str(path)] + (extra or []), port)
    _ALL_PROCS.remove(base)
    upstream_port = int(cfg["upstream"].rsplit(":", 1)[1]) if cfg.get("upstream") else 0
    sc = Sidecar(base.name, base.popen, base.log, port, admin, upstream_port)
    sc.config_path = path  # type: ignore[attr-defined]
    _ALL_PROCS.append(sc)

    def ready():
        if not tcp_connectable(port):
            return False
        try:
            status, _ = http_get(admin, "/healthz", timeout=0.5)
        except OSError:
            return False
        return status == 200

    try:
        _wait_until(sc, ready, f"accepting on {port} with /healthz 200 on {admin}", timeout=ready_timeout)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    return sc


def run_probe_cli(args: List[str], timeout: float = 20.0) -> subprocess.CompletedProcess:
    """``insight-sidecar probe ARGS`` -> CompletedProcess (text stdout/stderr)."""
    binary = require_sidecar()
    return subprocess.run([str(binary), "probe"] + args, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), stdin=subprocess.DEVNULL)


@pytest.fixture
def probe_procs():
    """Factory for probe topologies; everything is killed at teardown."""
    started: List[Proc] = []

    def keep(p):
        started.append(p)
        return p

    class Factory:
        def grpc_server(self, extra=None) -> Proc:
            return keep(start_grpc_server_args(extra))

        def sidecar(self, cfg, name="sidecar-probe", extra=None) -> Sidecar:
            return keep(start_config_sidecar(cfg, name, extra))

        def nghttpx(self, backend_port) -> Proc:
            return keep(start_nghttpx(backend_port))

    yield Factory()
    for p in reversed(started):
        p.kill()
        if p in _ALL_PROCS:
            _ALL_PROCS.remove(p)
