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
