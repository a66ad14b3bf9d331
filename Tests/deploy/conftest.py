"""Shared helpers for the deploy checks (Tests/deploy): paths, processes on loopback,
the rendered Kubernetes manifests and a report printed at the end of the run.

Environment:
  INSIGHT_SIDECAR       sidecar binary (default <repo>/.build/debug/insight-sidecar)
  INSIGHT_DEPLOY_LOG_DIR  where process logs go (default a new /tmp/insight-deploy-* dir)
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEPLOY = REPO / "Deploy"
K8S = DEPLOY / "kubernetes"
OVERLAYS = ["region-a", "region-b"]
RULE_FILES = [DEPLOY / "prometheus/rules/insight-recording.rules.yaml",
              DEPLOY / "prometheus/rules/insight-alerts.rules.yaml"]
DASHBOARD = DEPLOY / "grafana/insight-dashboard.json"
GRAFANA_DATASOURCES = DEPLOY / "grafana/provisioning/datasources/insight.yaml"
METRICS_DOC = REPO / "Docs/metrics.md"
OPERATIONS = REPO / "Docs/operations.md"
GRPC_SERVER = REPO / "Tests/e2e/grpc_server.py"
E2E = REPO / "Tests/e2e"  # otlp_receiver.py: the OTLP/HTTP trace receiver of the e2e tests
# Config keys of features that may not have landed in the binary yet. A ConfigMap that the
# binary rejects only because of these is reported as such (and still fails its check).
PENDING_KEYS = ["probes", "receiver"]
LOG_DIR = Path(os.environ.get("INSIGHT_DEPLOY_LOG_DIR") or tempfile.mkdtemp(prefix="insight-deploy-"))

REPORT: List[str] = []


def note(line: str) -> None:
    """A line for the report printed after the test summary."""
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("deploy report")
        for line in REPORT:
            terminalreporter.write_line(line)


# ---------------------------------------------------------------- tools

def sidecar_binary() -> Path:
    path = Path(os.environ.get("INSIGHT_SIDECAR") or REPO / ".build/debug/insight-sidecar")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"insight-sidecar not found at {path}: run `swift build` or set INSIGHT_SIDECAR",
                    pytrace=False)
    return path


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not installed (Debian: apt-get install -y prometheus)", pytrace=False)
    return path


def kustomize_cmd() -> Optional[List[str]]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def load_yaml_docs(path: Path) -> List[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render_overlay(overlay: str) -> List[dict]:
    """The overlay's manifests: `kustomize build` when kustomize or kubectl is installed,
    else the base resources with the overlay's ConfigMaps and namespace applied by hand
    (the overlays only add those, labels and an image tag)."""
    cmd = kustomize_cmd()
    d = K8S / "overlays" / overlay
    if cmd:
        out = subprocess.run(cmd + [str(d)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{' '.join(cmd)} {d} failed:\n{out.stderr}"
        return [x for x in yaml.safe_load_all(out.stdout) if x is not None]
    kust = yaml.safe_load((d / "kustomization.yaml").read_text())
    base = yaml.safe_load((K8S / "base/kustomization.yaml").read_text())
    docs = []
    for res in base["resources"]:
        docs += load_yaml_docs(K8S / "base" / res)
    for gen in kust.get("configMapGenerator", []):
        data = {}
        for f in gen["files"]:
            key, _, src = f.partition("=")
            data[key] = (d / src).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for doc in docs:
        doc["metadata"]["namespace"] = kust.get("namespace")
    return docs


@pytest.fixture(scope="session")
def rendered() -> Dict[str, List[dict]]:
    if not kustomize_cmd():
        note("kustomize/kubectl not installed: manifests checked from the raw files, not `kustomize build`")
    return {o: render_overlay(o) for o in OVERLAYS}


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 2.0, headers: Optional[dict] = None):
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class Proc:
    def __init__(self, name: str, argv: List[str], port: int = 0):
        self.name, self.port = name, port
        self.log = LOG_DIR / f"{name}-{int(time.time() * 1000)}.log"
        with open(self.log, "wb") as fh:
            self.popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=str(REPO),
                                          start_new_session=True)
        _PROCS.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_until(self, ready, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.tail()}",
                            pytrace=False)
            if ready():
                return
            time.sleep(0.05)
        pytest.fail(f"{self.name}: not {what} within {timeout}s:\n{self.tail()}", pytrace=False)

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self in _PROCS:
            _PROCS.remove(self)


_PROCS: List[Proc] = []


def pytest_sessionfinish(session, exitstatus):
    for p in list(_PROCS):
        try:
            if p.alive():
                p.popen.kill()
                p.popen.wait(5)
        except Exception:
            pass


def start_grpc_server() -> Proc:
    port = free_port()
    p = Proc("grpc-server", [sys.executable, "-u", str(GRPC_SERVER), "--port", str(port)], port)
    p.wait_until(lambda: "listening on" in p.tail(5) and tcp_connectable(port), f"listening on {port}")
    return p


def start_sidecar(name: str, args: List[str]) -> Proc:
    """insight-sidecar run <args> on loopback; args must contain --listen and --admin."""
    port = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
    admin = int(args[args.index("--admin") + 1].rsplit(":", 1)[1])
    p = Proc(name, [str(sidecar_binary()), "run"] + args, port)
    p.admin_port = admin
    p.wait_until(lambda: tcp_connectable(port) and tcp_connectable(admin), f"listening on {port} and {admin}")
    return p


def check_config(args: List[str]):
    """insight-sidecar check-config <args> -> (exit code, output)."""
    out = subprocess.run([str(sidecar_binary()), "check-config"] + args, capture_output=True, text=True,
                         timeout=30)
    return out.returncode, (out.stdout + out.stderr).strip()


def exemplar_label() -> str:
    """The exemplar label that carries the trace id, as Docs/metrics.md documents it."""
    m = re.search(r"histogram observations carry the call's correlation id \(`(\w+)`", METRICS_DOC.read_text())
    assert m, "Docs/metrics.md no longer names the exemplars' trace id label"
    return m.group(1)


def grafana_datasources() -> List[dict]:
    return yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]


def exemplar_destinations() -> List[dict]:
    """exemplarTraceIdDestinations of the provisioned Prometheus data source."""
    prom = [d for d in grafana_datasources() if d["type"] == "prometheus"]
    assert len(prom) == 1, prom
    return prom[0].get("jsonData", {}).get("exemplarTraceIdDestinations") or []


def probes_supported() -> bool:
    """Whether this binary accepts the probes/receiver config keys."""
    path = LOG_DIR / "probe-support.yaml"
    path.write_text("upstream: 127.0.0.1:1\nhop: x\nregion: r\nreceiver: false\n"
                    "probes:\n  interval: 5s\n  timeout: 1s\n  targets:\n"
                    "    - {name: t, address: 127.0.0.1:2, region: r2, kind: health, service: \"\"}\n")
    rc, _ = check_config(["--config", str(path)])
    return rc == 0
