"""The docs against the binary, mechanically.

- Every flag default in the README's tables (``run``/``check-config``, ``probe``, ``demo``,
  ``diagnose``) equals what ``insight-sidecar <command> --help`` says, and every flag in the
  help is in the table.
- Every exit code the docs promise (README, Docs/configuration.md, Docs/protocol.md,
  Docs/operations.md: exit-code tables and sentences such as "exits with code 2") is
  produced by running the binary into that situation. Each claim is matched to scenarios by
  command and by words in the claim; a claim no scenario covers fails the test.
- The admin 404 body in Docs/metrics.md and the `check-config` output in
  Docs/configuration.md (for the example config printed there) are what the binary writes.
"""

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from conftest import (TEST_SERVICE, free_port, http_get, make_channel, require_sidecar,
                      tcp_connectable)

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOC_FILES = ["README.md", "Docs/configuration.md", "Docs/protocol.md", "Docs/operations.md"]


def sections(text: str):
    """[(heading, body)] for every Markdown heading."""
    out, heading, body, fenced = [], "", [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("#") and not fenced:
            out.append((heading, "\n".join(body)))
            heading, body = line, []
        else:
            body.append(line)
    out.append((heading, "\n".join(body)))
    return out


def table_rows(body: str):
    """Rows of the Markdown tables in ``body`` as lists of cells, with the header first."""
    tables, current = [], []
    for line in body.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def run_bin(*args, timeout=20):
    return subprocess.run([str(require_sidecar()), *args], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------
# (b) flag defaults: README tables == --help
# --------------------------------------------------------------------------

README_COMMANDS = {"run": "### `run` and `check-config`", "probe": "### `probe`", "demo": "### `demo`",
                   "diagnose": "### `diagnose`"}
NO_DEFAULT = {"required", "–", "-", "off"}


def readme_flags(command: str):
    """{--flag: default cell} from the README table under the command's heading."""
    body = dict(sections(README.read_text()))[README_COMMANDS[command]]
    table = next(t for t in table_rows(body) if t[0][0] == "flag")
    col = table[0].index("default")
    return {re.match(r"`(--[a-z-]+)", row[0]).group(1): row[col] for row in table[1:]}


def help_defaults(command: str):
    """{--flag: default text or None} from ``<command> --help``."""
    out = run_bin(command, "--help").stdout
    blocks, flag = {}, None
    for line in out.split("OPTIONS:", 1)[1].splitlines():
        m = re.match(r"^  (?:-\w, )?(--[a-z-]+)", line)
        if m:
            flag = m.group(1)
            blocks[flag] = line
        elif flag and line.startswith("    "):
            blocks[flag] += " " + line.strip()
    blocks.pop("--help", None)
    blocks.pop("--version", None)
    result = {}
    for flag, text in blocks.items():
        text = re.sub(r"\s+", " ", text)
        m = re.search(r"\(default:? ([^)]*)\)", text) or re.search(r"\b[Dd]efault:? (\S+?)\.?(?:\s|$)", text)
        result[flag] = m.group(1).strip() if m else None
    return result


@pytest.mark.parametrize("command", sorted(README_COMMANDS))
def test_help_defaults_match_readme(command):
    documented = readme_flags(command)
    shown = help_defaults(command)
    problems = []
    for flag in sorted(set(shown) - set(documented)):
        problems.append(f"{flag}: in --help, not in the README table")
    for flag, cell in documented.items():
        if flag not in shown:
            problems.append(f"{flag}: in the README table, not in --help")
            continue
        value = re.search(r"`([^`]*)`", cell)
        readme_value = value.group(1) if value else "off"  # prose such as "timing on": no value
        help_value = shown[flag]
        if readme_value in NO_DEFAULT:
            if help_value is not None and help_value != readme_value and help_value not in cell:
                problems.append(f"{flag}: README says {cell!r}, --help says default {help_value!r}")
        elif help_value is None:
            problems.append(f"{flag}: README default {readme_value!r}, --help shows no default")
        elif help_value != readme_value and help_value not in cell:
            problems.append(f"{flag}: README default {readme_value!r}, --help says {help_value!r}")
    assert not problems, f"{command}:\n" + "\n".join(problems)


# --------------------------------------------------------------------------
# (c) every documented exit code is produced
# --------------------------------------------------------------------------

def command_of(heading: str, doc: str) -> str:
    for c in ("probe", "diagnose", "demo"):
        if f"`{c}`" in heading or heading.lower().endswith(f" {c}"):
            return c
    return "run"


def documented_exit_codes():
    """[(command, code, (claim text, context), where)]: exit-code table rows and prose claims."""
    claims = []
    for doc in DOC_FILES:
        for heading, body in sections((ROOT / doc).read_text()):
            command = command_of(heading, doc)
            for table in table_rows(body):
                if table[0][0].lower() in ("code", "exit code"):
                    for row in table[1:]:
                        claims.append((command, int(row[0]), (row[1], ""), f"{doc} {heading} table"))
            previous = ""
            for para in re.split(r"\n\s*\n", body):
                if para.lstrip().startswith("|"):
                    continue
                # One claim per list item, with the paragraph before as context.
                for item in re.split(r"\n(?=\s*(?:[-*]|\d+\.) )", para):
                    flat = re.sub(r"\s+", " ", item).strip()
                    for m in re.finditer(r"\bexit(?:s|ed)?(?: with)?(?: code)? (\d)\b", flat):
                        claims.append((command, int(m.group(1)), (flat, previous), f"{doc} {heading}"))
                previous = re.sub(r"\s+", " ", para)
    return claims


class Scenarios:
    """Runs the binary into each documented situation; returns exit codes."""

    def __init__(self, tmp_path, procs):
        self.tmp = tmp_path
        self.procs = procs
        self._server = None

    def server(self):
        if self._server is None:
            self._server = self.procs.grpc_server()
        return self._server

    def base(self):
        return ["--upstream", "127.0.0.1:1", "--hop", "x", "--region", "r"]

    # run / check-config
    def run_signal(self):
        listen, admin = free_port(), free_port()
        p = subprocess.Popen([str(require_sidecar()), "run", *self.base(), "--listen", f"127.0.0.1:{listen}",
                              "--admin", f"127.0.0.1:{admin}", "--drain-timeout", "1s"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while not tcp_connectable(admin) and time.time() < deadline:
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=20)

    def check_config_ok(self):
        return run_bin("check-config", *self.base()).returncode

    def help(self):
        return run_bin("run", "--help").returncode

    def port_in_use(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            return run_bin("run", *self.base(), "--listen", f"127.0.0.1:{s.getsockname()[1]}",
                           "--admin", "127.0.0.1:0").returncode
        finally:
            s.close()

    def check_config_expired_cert(self):
        """check-config warns about an expired serving certificate and still exits 0."""
        from tls_certs import PKI
        pki = PKI(self.tmp / "pki")
        cfg = self.tmp / "expired.yaml"
        cfg.write_text(f"tls:\n  cert: {pki.expired.cert}\n  key: {pki.expired.key}\n")
        out = run_bin("check-config", *self.base(), "--config", str(cfg))
        assert "warning: " in out.stdout + out.stderr and "expired" in out.stdout + out.stderr, out
        return out.returncode

    def invalid_config(self):
        cfg = self.tmp / "bad.yaml"
        cfg.write_text("limits:\n  max_concurrent_streams: 0\n")
        return run_bin("check-config", *self.base(), "--config", str(cfg)).returncode

    def invalid_config_run(self):
        return run_bin("run", *self.base(), "--hop-limit", "0").returncode

    def usage_error(self):
        return run_bin("run", *self.base(), "--no-such-flag").returncode

    def access_log_unopenable(self):
        return run_bin("run", *self.base(), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                       "--access-log", str(self.tmp / "no" / "such" / "dir.log")).returncode

    # probe
    def probe(self, *args, port=None):
        return run_bin("probe", "--target", f"127.0.0.1:{port or self.server().port}", *args).returncode

    def probe_success(self):
        return self.probe()

    def probe_connect_error(self):
        return self.probe(port=free_port())

    def probe_rpc_error(self):
        return self.probe("--service", "no.such.Service")

    def probe_timeout(self):
        slow = self.procs.grpc_server()
        ch = make_channel(f"127.0.0.1:{slow.port}")
        ch.unary_unary(TEST_SERVICE + "SetHealth")(json.dumps({"delay_ms": 2000}).encode(), timeout=5)
        ch.close()
        return self.probe("--timeout", "300ms", port=slow.port)

    def probe_not_serving(self):
        ch = make_channel(f"127.0.0.1:{self.server().port}")
        ch.unary_unary(TEST_SERVICE + "SetHealth")(
            json.dumps({"service": "down.Service", "status": "NOT_SERVING"}).encode(), timeout=5)
        ch.close()
        return self.probe("--service", "down.Service")

    def probe_unknown_flag(self):
        return self.probe("--no-such-flag")

    def probe_invalid_value(self):
        return self.probe("--timeout", "soon")

    # diagnose
    def diagnose_unreachable(self):
        return run_bin("diagnose", "--admin", f"127.0.0.1:{free_port()}").returncode


# (command, words in the claim, scenario methods): a claim runs every matching group.
SCENARIOS = [
    ("run", r"signal|SIGTERM", ["run_signal"]),
    ("run", r"configuration valid|configuration is valid", ["check_config_ok"]),
    ("run", r"--help", ["help"]),
    ("run", r"cannot start|bound|port is in use", ["port_in_use"]),
    ("run", r"[Ii]nvalid (?:configuration|setting|flag or config)|configuration error|is invalid",
     ["invalid_config", "invalid_config_run"]),
    ("run", r"[Cc]ommand-line usage|unknown flag|invalid flag", ["usage_error"]),
    ("run", r"access log", ["access_log_unopenable"]),
    ("run", r"still exits 0", ["check_config_expired_cert"]),
    ("probe", r"success", ["probe_success"]),
    ("probe", r"connect", ["probe_connect_error"]),
    ("probe", r"[Rr][Pp][Cc][ _]error", ["probe_rpc_error"]),
    ("probe", r"timeout", ["probe_timeout"]),
    ("probe", r"not[ _]serving", ["probe_not_serving"]),
    ("probe", r"[Ii]nvalid flag|[Cc]ommand-line errors|invalid argument|invalid command line", ["probe_unknown_flag", "probe_invalid_value"]),
    ("diagnose", r"cannot be reached|does not answer", ["diagnose_unreachable"]),
]


def test_every_documented_exit_code_is_produced(procs, tmp_path):
    claims = documented_exit_codes()
    assert len(claims) >= 15, claims
    scenarios = Scenarios(tmp_path, procs)
    results, problems = {}, []
    for command, code, (text, context), where in claims:
        groups = [names for c, words, names in SCENARIOS if c == command and re.search(words, text)]
        if not groups:
            groups = [names for c, words, names in SCENARIOS if c == command and re.search(words, context)]
        if not groups:
            problems.append(f"{where}: no test produces `{command}` exit {code} for: {text[:160]!r}")
            continue
        for name in (n for g in groups for n in g):
            if name not in results:
                results[name] = getattr(scenarios, name)()
            if results[name] != code:
                problems.append(f"{where}: documented exit {code} for {text[:120]!r}, "
                                f"but {name} exits {results[name]}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# admin 404 body, check-config output
# --------------------------------------------------------------------------

def test_admin_404_body_matches_metrics_md(procs):
    row = next(line for line in (ROOT / "Docs/metrics.md").read_text().splitlines()
               if line.startswith("| any other path |"))
    body = re.findall(r"`([^`]*)`", row)[-1]
    sc = procs.sidecar(free_port())
    status, got = http_get(sc.admin_port, "/no/such/page")
    assert status == 404
    assert (got.decode() if isinstance(got, bytes) else got).strip() == body


def test_check_config_output_matches_configuration_md(tmp_path):
    text = (ROOT / "Docs/configuration.md").read_text()
    example = dict(sections(text))["## Example"]
    cfg = tmp_path / "example.yaml"
    cfg.write_text(re.search(r"```yaml\n(.*?)```", example, re.S).group(1))
    check = dict(sections(text))["## `check-config`"]
    block = re.search(r"```\n\$ insight-sidecar check-config [^\n]*\n(.*?)```", check, re.S).group(1)
    out = run_bin("check-config", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert out.stdout == block


def test_live_metric_families_are_documented(procs):
    """Families a running sidecar exports after traffic are in Docs/metrics.md (the unit test
    DocsMatchCodeTests checks the source's literals both ways, lazily registered ones included)."""
    documented = set(re.findall(r"^\| `(insight_[a-z0-9_]+)`", (ROOT / "Docs/metrics.md").read_text(), re.M))
    server = procs.grpc_server()
    sc = procs.sidecar(server.port)
    ch = make_channel(sc.addr)
    ch.unary_unary(TEST_SERVICE + "Unary")(b"hi", timeout=5)
    ch.close()
    _, text = http_get(sc.admin_port, "/metrics")
    text = text.decode() if isinstance(text, bytes) else text
    exported = set(re.findall(r"^# TYPE (insight_[a-z0-9_]+) ", text, re.M))
    assert len(exported) > 20, text[:500]
    assert exported <= documented, f"exported but not in Docs/metrics.md: {sorted(exported - documented)}"
