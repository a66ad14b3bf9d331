"""The command line as an operator meets it (issue 15): ``--version`` and
``insight_build_info``, exit codes of usage errors (``probe`` exits 1 as grpc_health_probe
does, the other commands 2), and configuration errors that name the field or the path in
plain words. Each runs the real binary as a subprocess.
"""

import re
import subprocess

from conftest import REPO, free_port, metrics_text, parse_metrics, require_sidecar, start_sidecar

BASE = ["--upstream", "127.0.0.1:1", "--hop", "h", "--region", "r"]


def cli(args, timeout=20.0):
    return subprocess.run([str(require_sidecar())] + args, capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO), stdin=subprocess.DEVNULL)


def version_line():
    r = cli(["--version"])
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    m = re.fullmatch(r"(\d+\.\d+\.\d+) \(revision ([0-9a-f]{7,40}|unknown)\)\n", r.stdout)
    assert m, r.stdout
    return m.group(1), m.group(2)


def test_version_flag_and_build_info_gauge(grpc_server):
    version, revision = version_line()
    sc = start_sidecar(grpc_server.port)
    try:
        info = [(lab, v) for n, lab, v in parse_metrics(metrics_text(sc)) if n == "insight_build_info"]
        assert info == [({"version": version, "revision": revision}, 1.0)], info
    finally:
        sc.stop()


def test_probe_usage_errors_exit_1():
    """grpc_health_probe exits 1 on invalid arguments, so 2 keeps meaning "cannot connect"."""
    for args in (["probe"], ["probe", "--target", "127.0.0.1:1", "--bogus"],
                 ["probe", "--target", "nohost"], ["probe", "--target", "127.0.0.1:1", "--timeout", "soon"],
                 ["probe", "--target", "127.0.0.1:1", "--timeout", "0"]):
        r = cli(args)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("insight-sidecar: ") and len(r.stderr.splitlines()) == 1, r.stderr
    # A refused connect is still 2.
    r = cli(["probe", "--target", f"127.0.0.1:{free_port()}"])
    assert r.returncode == 2, (r.returncode, r.stdout)
    assert "connect to 127.0.0.1:" in r.stdout and "failed: connection refused" in r.stdout, r.stdout


def test_other_commands_usage_errors_exit_2():
    for args in (["run", "--bogus"], ["check-config", "--bogus"], ["bogus-command"]):
        r = cli(args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)


def check_config_error(tmp_path, args, text=None):
    if text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        args = ["--config", str(path)] + args
    r = cli(["check-config"] + args)
    assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1, r.stderr
    return r.stderr.strip()


def test_configuration_errors_name_the_field_in_plain_words(tmp_path):
    # --event-loops -1 reaches the range check (it read as a missing value before).
    err = check_config_error(tmp_path, BASE + ["--event-loops", "-1"])
    assert err == "insight-sidecar: invalid configuration: event_loops: must be 0 (one per core) to 256, got -1", err
    # A directory as --config: the path and what is wrong with it ("NSCocoaErrorDomain error 256" before).
    err = check_config_error(tmp_path, BASE + ["--config", str(tmp_path)])
    assert err == f"insight-sidecar: invalid configuration: config: cannot read {tmp_path}: it is a directory, not a file"
    err = check_config_error(tmp_path, BASE + ["--config", str(tmp_path / "missing.yaml")])
    assert err.endswith("missing.yaml: no such file"), err
    # connect_timeout 0, from the file and from the flag.
    err = check_config_error(tmp_path, BASE, "connect_timeout: 0\n")
    assert "connect_timeout: must be more than 0" in err, err
    err = check_config_error(tmp_path, BASE + ["--connect-timeout", "0s"])
    assert "connect_timeout: must be more than 0" in err, err
    # A second limits: block would silently replace the first.
    err = check_config_error(tmp_path, BASE, "limits:\n  max_connections: 5\nlimits:\n  idle_timeout: 5s\n")
    assert "invalid configuration: limits: duplicate key" in err, err
    err = check_config_error(tmp_path, BASE, "limits:\n  max_connections: 5\n  max_connections: 6\n")
    assert "invalid configuration: limits.max_connections: duplicate key" in err, err
    # Without the duplicate, the same file is fine.
    path = tmp_path / "ok.yaml"
    path.write_text("limits:\n  max_connections: 5\n  idle_timeout: 5s\n")
    r = cli(["check-config", "--config", str(path)] + BASE)
    assert r.returncode == 0 and "configuration ok" in r.stdout, (r.stdout, r.stderr)
    # Every timeout it runs with is printed, from the flags as from the file.
    r = cli(["check-config"] + BASE + ["--admin-idle-timeout", "7s", "--connect-timeout", "250ms"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "admin_idle_timeout: 7s" in lines and "connect_timeout: 250ms" in lines, r.stdout


def test_run_help_shows_every_default():
    r = cli(["run", "--help"])
    assert r.returncode == 0, r.stderr
    options = r.stdout.split("OPTIONS:", 1)[1]
    # One entry per flag: its first line starts with "  --", continuation lines are indented more.
    entries = re.split(r"\n(?=  -)", options.strip("\n"))
    flags = [e for e in entries if not e.lstrip().startswith(("-h, --help", "--version"))]
    assert len(flags) >= 16, flags
    missing = [e.split()[0] for e in flags if not re.search(r"\b(Default|Required)\b", " ".join(e.split()))]
    assert not missing, f"run --help: no default for {missing}"
