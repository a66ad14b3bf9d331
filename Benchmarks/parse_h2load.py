#!/usr/bin/env python3
"""Parse h2load output and render the Insight benchmark report.

Usage:
  parse_h2load.py parse FILE             -> JSON summary of one h2load run
  parse_h2load.py check FILE [BODYSIZE]  -> exit 0 iff the run is valid (used for smoke tests)
  parse_h2load.py report OUTDIR MDFILE   -> print the comparison table, write it as Markdown

OUTDIR layout (written by run.sh):
  OUTDIR/targets.tsv          one line per target: name<TAB>status<TAB>note  (status: ok|skipped)
  OUTDIR/meta.tsv             key<TAB>value lines shown in the report header
  OUTDIR/<target>__<test>__<rep>.txt   raw h2load output, test in {small,latency,bulk}
  OUTDIR/<target>__<test>__<rep>.cpu   optional: "TICKS_BEFORE TICKS_AFTER CLK_TCK [NS_BEFORE NS_AFTER]":
                                       the proxy process tree's utime+stime(+cutime+cstime) from
                                       /proc/PID/stat around that h2load run, and the same CPU time in ns
                                       summed from its threads' /proc/PID/task/TID/schedstat ("-" if n/a)

Everything is parsed from the *exact* byte counts h2load prints in parentheses and from
its "finished in" / "time for request" lines; unit suffixes (ns/us/ms/s) are normalised.
"""
import glob
import json
import os
import re
import statistics
import sys

DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_dur_re = r"([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s|m|h)"


def parse_duration(text):
    m = re.fullmatch(_dur_re, text.strip())
    if not m:
        raise ValueError("bad duration %r" % text)
    return float(m.group(1)) * DUR_UNITS[m.group(2)]


def parse(text, body_size=None):
    """Return a dict of the h2load figures; 'errors' lists everything that makes it invalid.

    body_size: if given (count-mode runs only), the received DATA bytes must equal
    total * body_size; in duration mode h2load also counts warm-up bytes, so don't pass it.
    """
    r = {"errors": []}

    m = re.search(r"^finished in\s+" + _dur_re + r",\s*([0-9.]+)\s+req/s", text, re.M)
    if m:
        r["finished_s"] = float(m.group(1)) * DUR_UNITS[m.group(2)]
        r["req_per_s"] = float(m.group(3))
    else:
        r["errors"].append("no 'finished in' line")

    m = re.search(
        r"^requests:\s+(\d+) total,\s+(\d+) started,\s+(\d+) done,\s+(\d+) succeeded,"
        r"\s+(\d+) failed,\s+(\d+) errored,\s+(\d+) timeout",
        text,
        re.M,
    )
    if m:
        keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
        r.update(dict(zip(keys, map(int, m.groups()))))
        if r["total"] == 0:
            r["errors"].append("0 requests")
        for k in ("failed", "errored", "timeout"):
            if r[k]:
                r["errors"].append("%d %s" % (r[k], k))
        if r["succeeded"] != r["total"]:
            r["errors"].append("%d/%d succeeded" % (r["succeeded"], r["total"]))
    else:
        r["errors"].append("no 'requests:' line")

    m = re.search(r"^status codes:\s+(\d+) 2xx,\s+(\d+) 3xx,\s+(\d+) 4xx,\s+(\d+) 5xx", text, re.M)
    if m:
        r["s2xx"], r["s3xx"], r["s4xx"], r["s5xx"] = map(int, m.groups())
        if "total" in r and r["s2xx"] != r["total"]:
            r["errors"].append("%d/%d responses were 2xx" % (r["s2xx"], r["total"]))
    else:
        r["errors"].append("no 'status codes:' line")

    m = re.search(r"^traffic:.*?\((\d+)\) total.*?\((\d+)\) headers.*?\((\d+)\) data", text, re.M)
    if m:
        r["traffic_bytes"], r["header_bytes"], r["data_bytes"] = map(int, m.groups())
    else:
        r["errors"].append("no 'traffic:' line")

    m = re.search(
        r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M
    )
    if m:
        try:
            r["req_min_s"], r["req_max_s"], r["req_mean_s"], r["req_sd_s"] = map(parse_duration, m.groups())
        except ValueError as e:
            r["errors"].append(str(e))
    else:
        r["errors"].append("no 'time for request:' line")

    if body_size is not None and "data_bytes" in r and "total" in r:
        if r["data_bytes"] != r["total"] * body_size:
            r["errors"].append("received %d body bytes, expected %d x %d" % (r["data_bytes"], r["total"], body_size))

    m = re.search(r"^h2load exit status.*$", text, re.M)
    if m:
        r["errors"].append(m.group(0))

    r["valid"] = not r["errors"]
    return r


# ---------------------------------------------------------------- CPU per request / per MB


def cpu_seconds(h2load_file):
    """CPU seconds the proxy used during one h2load run (from the .cpu file next to it), or None.

    The stat figure (utime+stime) is authoritative but comes in clock ticks (10 ms), which is
    coarse for a short bulk run.  The schedstat figure is the same CPU time in ns, but only for
    the threads alive at both samples; it is used when it agrees with the tick figure to within
    3 ticks (rounding at both ends), i.e. when no thread or child process exited in between.
    """
    p = h2load_file[: -len(".txt")] + ".cpu" if h2load_file.endswith(".txt") else h2load_file + ".cpu"
    try:
        with open(p) as fh:
            fields = fh.read().split()
        before, after, clk_tck = (int(x) for x in fields[:3])
    except (OSError, ValueError):
        return None
    if after < before or clk_tck <= 0:
        return None
    ticks_s = (after - before) / clk_tck
    try:
        ns_s = (int(fields[4]) - int(fields[3])) / 1e9
    except (IndexError, ValueError):
        return ticks_s
    if ns_s >= 0 and abs(ns_s - ticks_s) <= 3.0 / clk_tck:
        return ns_s
    return ticks_s


def requests_in_run(r, body_size):
    """Requests completed during the whole h2load run, warm-up included.

    In duration mode (-D with --warm-up-time), h2load's "requests:" line counts only the
    measurement window, but its DATA byte count covers the warm-up too (checked with
    nghttp2 1.52).  The CPU sample spans the whole run, so the request count has to as well:
    body bytes / body size.  Count-mode runs have no warm-up; there both figures agree.
    """
    total = r.get("total", 0)
    if body_size and r.get("data_bytes") is not None:
        return max(total, r["data_bytes"] // body_size)
    return total


def cpu_figure(test, r, cpu_s, body_size):
    """CPU µs per request (small, latency) or per MB of body (bulk; MB = 10^6 B); None if unknown."""
    if cpu_s is None or not r.get("valid"):
        return None
    if test == "bulk":
        mb = r.get("data_bytes", 0) / 1e6
        return cpu_s * 1e6 / mb if mb > 0 else None
    n = requests_in_run(r, body_size)
    return cpu_s * 1e6 / n if n > 0 else None


# ---------------------------------------------------------------- report

TESTS = ("small", "latency", "bulk")


def load_sizes(outdir):
    sizes = {}
    p = os.path.join(outdir, "sizes.tsv")
    if os.path.exists(p):
        with open(p) as fh:
            for line in fh:
                k, _, v = line.strip().partition("\t")
                if v:
                    sizes[k] = int(v)
    return sizes


def load_target(outdir, name):
    """Median of each metric over the repetitions; invalid if any repetition is invalid."""
    res = {}
    sizes = load_sizes(outdir)
    for test in TESTS:
        files = sorted(glob.glob(os.path.join(outdir, "%s__%s__*.txt" % (name, test))))
        runs = []
        cpus = []
        for f in files:
            with open(f, errors="replace") as fh:
                # small runs are duration-based: byte counts include warm-up, so no size check
                runs.append(parse(fh.read(), None if test == "small" else sizes.get(test)))
            cpus.append(cpu_figure(test, runs[-1], cpu_seconds(f), sizes.get(test)))
        entry = {"runs": len(runs), "errors": []}
        if not runs:
            entry["errors"].append("not run")
        for i, r in enumerate(runs):
            entry["errors"] += ["rep %d: %s" % (i + 1, e) for e in r["errors"]]
        entry["valid"] = not entry["errors"]
        good = [r for r in runs if r["valid"]]
        good_cpu = [c for r, c in zip(runs, cpus) if r["valid"] and c is not None]
        # CPU µs/req (small) or µs/MB (bulk): median over the valid reps that have a CPU sample
        entry["cpu"] = statistics.median(good_cpu) if good_cpu else None
        if good:
            if test == "small":
                entry["value"] = statistics.median(r["req_per_s"] for r in good)
            elif test == "latency":
                entry["mean_us"] = statistics.median(r["req_mean_s"] for r in good) * 1e6
                entry["max_us"] = max(r["req_max_s"] for r in good) * 1e6
            elif test == "bulk":
                # exact body bytes / wall time of the run (1 connection, sequential requests)
                entry["value"] = statistics.median(
                    r["data_bytes"] / r["finished_s"] / 1e6 for r in good if r["finished_s"] > 0
                )
        res[test] = entry
    return res


def fmt_num(v, digits=0):
    if v is None:
        return "-"
    return "{:,.{d}f}".format(v, d=digits)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2fx" % (a / b)


def report(outdir, mdfile):
    targets = []
    with open(os.path.join(outdir, "targets.tsv")) as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if parts and parts[0]:
                parts += [""] * (3 - len(parts))
                targets.append(tuple(parts[:3]))
    meta = []
    mp = os.path.join(outdir, "meta.tsv")
    if os.path.exists(mp):
        with open(mp) as fh:
            meta = [tuple(l.rstrip("\n").split("\t", 1)) for l in fh if "\t" in l]

    data = {}
    for name, status, _ in targets:
        if status == "ok":
            data[name] = load_target(outdir, name)

    def val(name, test, key="value"):
        e = data.get(name, {}).get(test)
        if not e or not e["valid"]:
            return None
        return e.get(key)

    header = [
        "target",
        "small req/s", "vs HAProxy", "vs direct", "CPU µs/req", "vs HAProxy",
        "lat mean us", "lat max us", "added mean us", "mean vs HAProxy",
        "bulk MB/s", "vs HAProxy", "vs direct", "CPU µs/MB",
        "status",
    ]
    rows = []
    notes = []
    for name, status, note in targets:
        if status != "ok":
            rows.append([name] + ["-"] * (len(header) - 2) + ["SKIPPED"])
            notes.append("%s: skipped - %s" % (name, note or "not available"))
            continue
        rq, rq_h, rq_d = val(name, "small"), val("haproxy", "small"), val("direct", "small")
        lm, lx = val(name, "latency", "mean_us"), val(name, "latency", "max_us")
        lm_h, lm_d = val("haproxy", "latency", "mean_us"), val("direct", "latency", "mean_us")
        bk, bk_h, bk_d = val(name, "bulk"), val("haproxy", "bulk"), val("direct", "bulk")
        cq, cq_h = val(name, "small", "cpu"), val("haproxy", "small", "cpu")
        cb = val(name, "bulk", "cpu")
        bad = [t for t in TESTS if not data[name][t]["valid"]]
        for t in bad:
            notes.append("%s/%s INVALID: %s" % (name, t, "; ".join(data[name][t]["errors"][:4])))
        rows.append([
            name,
            fmt_num(rq), ratio(rq, rq_h), ratio(rq, rq_d), fmt_num(cq, 1), ratio(cq, cq_h),
            fmt_num(lm, 1), fmt_num(lx), ("%+.1f" % (lm - lm_d)) if lm is not None and lm_d is not None else "-",
            ratio(lm, lm_h),
            fmt_num(bk), ratio(bk, bk_h), ratio(bk, bk_d), fmt_num(cb),
            "OK" if not bad else "INVALID(" + ",".join(bad) + ")",
        ])

    # ---- plain-text table
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    if notes:
        print()
        for n in notes:
            print("NOTE: " + n)

    # ---- markdown
    md = ["# Insight proxy benchmark - latest run", ""]
    for k, v in meta:
        md.append("- **%s**: %s" % (k, v))
    md += ["", "| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + [":---:"]) + "|"]
    for r in rows:
        md.append("| " + " | ".join(str(c) for c in r) + " |")
    md += [
        "",
        "Columns: *small req/s* = `h2load -c4 -m10` on a 100-byte file (duration mode, median of reps);",
        "*lat* = `h2load -c1 -m1` sequential, h2load's \"time for request\" (mean = median over reps, max = max over reps);",
        "*added mean us* = mean latency minus the direct-to-origin mean;",
        "*bulk MB/s* = body bytes / wall time for `h2load -c1 -m1` on a 10 MiB file (MB = 10^6 bytes).",
        "*CPU µs/req* = user+system CPU time of the proxy's process tree (from /proc/PID/stat) during the small run,",
        "divided by the requests h2load completed in that run (warm-up included, as the CPU sample includes it), median of reps;",
        "*CPU µs/MB* = the same around the bulk run, per 10^6 body bytes. Not measured for direct (no proxy).",
        "Ratios `vs X` are target / X (for latency and CPU, lower is better; for the others, higher is better).",
    ]
    if notes:
        md += [""] + ["- " + n for n in notes]
    os.makedirs(os.path.dirname(os.path.abspath(mdfile)), exist_ok=True)
    with open(mdfile, "w") as fh:
        fh.write("\n".join(md) + "\n")


def main(argv):
    if len(argv) >= 3 and argv[1] == "parse":
        with open(argv[2], errors="replace") as fh:
            print(json.dumps(parse(fh.read()), indent=2))
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        with open(argv[2], errors="replace") as fh:
            r = parse(fh.read(), int(argv[3]) if len(argv) >= 4 else None)
        if not r["valid"]:
            print("; ".join(r["errors"]), file=sys.stderr)
        return 0 if r["valid"] else 1
    if len(argv) >= 4 and argv[1] == "report":
        report(argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
