#!/usr/bin/env python3
"""Probe overhead benchmark (not part of pytest; run by hand):

    python3 Tests/e2e/bench_probes.py [--targets 1000] [--interval 1s] [--duration 20] [--perf FILE]

A prober sidecar probes N echo targets (all answered by one local receiver sidecar, so
N distinct targets share one address) at the given interval. After a warm-up it measures,
over ``--duration`` seconds, the prober's CPU time from /proc/PID/stat (as % of one core)
and its RSS, plus the receiver's, and the probe results from /metrics.

Uses ``.build/release/insight-sidecar`` if present, else the debug build (or
``--binary`` / ``INSIGHT_SIDECAR``), and says which.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import conftest as c  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3
    return float("nan")


def probe_totals(sc):
    text = c.metrics_text(sc)
    out = {}
    for name, labels, v in c.parse_metrics(text):
        if name == "insight_probe_total":
            out[labels["result"]] = out.get(labels["result"], 0) + v
    return out, text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--timeout", default="1s")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--event-loops", type=int, default=0, help="prober event loops (0 = one per core)")
    ap.add_argument("--binary")
    ap.add_argument("--perf", metavar="FILE",
                    help="also `perf record -g` the prober for 5 s of the window into FILE")
    args = ap.parse_args(argv)

    if args.binary:
        binary = Path(args.binary)
        kind = "given"
    elif os.environ.get("INSIGHT_SIDECAR"):
        binary = Path(os.environ["INSIGHT_SIDECAR"])
        kind = "INSIGHT_SIDECAR"
    elif (c.REPO / ".build/release/insight-sidecar").is_file() and not _stale(c.REPO / ".build/release/insight-sidecar"):
        binary = c.REPO / ".build/release/insight-sidecar"
        kind = "release"
    else:
        if (c.REPO / ".build/release/insight-sidecar").is_file():
            print("note: .build/release/insight-sidecar is older than Sources/ (swift build -c release); "
                  "using the debug build")
        binary = c.REPO / ".build/debug/insight-sidecar"
        kind = "debug"
    mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(binary.stat().st_mtime))
    print(f"binary: {binary} ({kind} build, built {mtime})")
    print(f"cores: {os.cpu_count()}, targets: {args.targets}, interval: {args.interval}, "
          f"prober event loops: {args.event_loops or 'one per core'}")

    procs = []
    try:
        server = c.start_grpc_server_args()
        procs.append(server)
        receiver = c.start_config_sidecar({"upstream": server.port, "hop": "gateway-b", "region": "a",
                                           "receiver": True, "log_level": "warning"},
                                          name="bench-receiver", binary=binary)
        procs.append(receiver)
        targets = [{"name": f"echo-{i:05d}", "address": receiver.addr, "region": "a", "kind": "echo"}
                   for i in range(args.targets)]
        prober = c.start_config_sidecar({"upstream": receiver.port, "hop": "bench", "region": "a",
                                         "log_level": "warning", "event_loops": args.event_loops,
                                         "probes": {"interval": args.interval, "timeout": args.timeout,
                                                    "targets": targets}},
                                        name="bench-prober", binary=binary)
        procs.append(prober)
        pid, rpid = prober.popen.pid, receiver.popen.pid

        time.sleep(args.warmup)
        t0 = time.monotonic()
        cpu0, rcpu0 = cpu_seconds(pid), cpu_seconds(rpid)
        res0, _ = probe_totals(prober)
        rss_samples = []
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-g", "-q", "-p", str(pid), "-o", args.perf, "--",
                                     "sleep", str(min(5.0, args.duration))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while time.monotonic() - t0 < args.duration:
            time.sleep(1.0)
            rss_samples.append(rss_mb(pid))
        elapsed = time.monotonic() - t0
        if perf:
            perf.wait()
        cpu1, rcpu1 = cpu_seconds(pid), cpu_seconds(rpid)
        res1, text = probe_totals(prober)
        answered = c.metric_sum(c.metrics_text(receiver), "insight_probe_echo_answered_total") or 0
        if not prober.alive() or not receiver.alive():
            print("a sidecar died:\n" + prober.log_tail() + receiver.log_tail())
            return 1

        delta = {k: res1.get(k, 0) - res0.get(k, 0) for k in set(res0) | set(res1)}
        probes = sum(delta.values())
        ok = delta.get("success", 0)
        dur_sum = c.metric_sum(text, "insight_probe_duration_seconds_sum") or 0
        dur_cnt = c.metric_sum(text, "insight_probe_duration_seconds_count") or 1
        cpu_pct = 100.0 * (cpu1 - cpu0) / elapsed
        print(f"window: {elapsed:.1f} s")
        print(f"probes: {probes:.0f} ({probes / elapsed:.0f}/s, expected ~{args.targets / _secs(args.interval):.0f}/s); "
              f"by result: { {k: int(v) for k, v in sorted(delta.items())} }")
        print(f"mean successful probe latency (whole run): {1000 * dur_sum / dur_cnt:.2f} ms")
        print(f"prober CPU: {cpu_pct:.1f}% of one core "
              f"({1e6 * (cpu1 - cpu0) / max(probes, 1):.0f} us CPU per probe)")
        print(f"prober RSS: {rss_samples[-1]:.1f} MB now, min/max in window {min(rss_samples):.1f}/"
              f"{max(rss_samples):.1f} MB, peak (VmHWM) {peak_rss_mb(pid):.1f} MB")
        print(f"receiver CPU: {100.0 * (rcpu1 - rcpu0) / elapsed:.1f}% of one core, RSS {rss_mb(rpid):.1f} MB, "
              f"echoes answered (total) {answered:.0f}")
        return 0 if ok > 0 else 1
    finally:
        for p in reversed(procs):
            p.kill()


def _stale(binary: Path) -> bool:
    newest = max((f.stat().st_mtime for f in (c.REPO / "Sources").rglob("*.swift")), default=0)
    return binary.stat().st_mtime < newest


def _secs(s: str) -> float:
    s = s.strip()
    for unit, mul in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * mul
    return float(s)


if __name__ == "__main__":
    sys.exit(main())
