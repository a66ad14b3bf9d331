#!/usr/bin/env python3
"""Report of Benchmarks/tracing.sh: CPU µs per request of the sidecar per tracing mode.

    tracing_report.py one FILE BODY_BYTES                  one h2load run -> progress line
    tracing_report.py report OUTDIR BODY_BYTES MD MODE...  table on stdout and in MD

OUTDIR holds MODE__REP.txt (h2load output) and MODE__REP.cpu (see parse_h2load.cpu_seconds),
spans.tsv (MODE, spans started, exported, dropped) and meta.tsv (KEY<TAB>VALUE lines).
The first MODE is the reference ("off") that the others are compared with.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parse_h2load as p  # noqa: E402


def run_figures(path, body_bytes):
    """(req/s, CPU µs per request, errors) of one run; None figures for an invalid run."""
    r = p.parse(open(path, errors="replace").read())
    cpu = p.cpu_figure("small", r, p.cpu_seconds(path), body_bytes)
    return (r.get("req_per_s") if r["valid"] else None), cpu, r["errors"]


def one(path, body_bytes):
    rps, cpu, errors = run_figures(path, body_bytes)
    s = "req/s=%.0f cpu=%s" % (rps or 0, "%.2fus/req" % cpu if cpu is not None else "n/a")
    print(s + ("" if not errors else "  INVALID: " + "; ".join(errors)))


def report(outdir, body_bytes, md_path, modes):
    runs = {m: sorted(f for f in os.listdir(outdir) if f.startswith(m + "__") and f.endswith(".txt"))
            for m in modes}
    spans = {}
    sp = os.path.join(outdir, "spans.tsv")
    if os.path.exists(sp):
        for line in open(sp):
            m, *counts = line.split()
            spans[m] = counts
    meta = []
    mp = os.path.join(outdir, "meta.tsv")
    if os.path.exists(mp):
        meta = [tuple(l.rstrip("\n").split("\t", 1)) for l in open(mp) if "\t" in l]

    rows, medians = [], {}
    for m in modes:
        figs = [run_figures(os.path.join(outdir, f), body_bytes) for f in runs[m]]
        cpus = [c for _, c, _ in figs if c is not None]
        rps = [r for r, _, _ in figs if r is not None]
        medians[m] = statistics.median(cpus) if cpus else None
        rows.append((m, cpus, rps, len(figs) - len(cpus)))
    ref = medians[modes[0]]
    header = ["tracing", "CPU µs/req (median)", "vs off", "CPU µs/req per rep", "req/s (median)",
              "spans started / exported / dropped", "invalid runs"]
    table = []
    for m, cpus, rps, invalid in rows:
        med = medians[m]
        vs = "-" if m == modes[0] or med is None or not ref else "%+.1f %%" % (100.0 * (med / ref - 1))
        label = "off" if m == modes[0] else f"sample_ratio {m}"
        table.append([label, "%.2f" % med if med is not None else "n/a", vs,
                      ", ".join("%.2f" % c for c in cpus), "%.0f" % statistics.median(rps) if rps else "n/a",
                      " / ".join(spans.get(m, ["?", "?", "?"])) if m != modes[0] else "-", str(invalid)])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    for line in [header] + table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    for k, v in meta:
        print(f"{k}: {v}")
    with open(md_path, "w") as fh:
        fh.write("# Tracing cost (Benchmarks/tracing.sh)\n\n")
        for k, v in meta:
            fh.write(f"- **{k}**: {v}\n")
        fh.write("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        for r in table:
            fh.write("| " + " | ".join(r) + " |\n")
    return 0 if all(medians.values()) else 1


def main(argv):
    if len(argv) == 4 and argv[1] == "one":
        one(argv[2], int(argv[3]))
        return 0
    if len(argv) >= 6 and argv[1] == "report":
        return report(argv[2], int(argv[3]), argv[4], argv[5:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
