#!/usr/bin/env bash
# TLS termination: h2load over TLS (h2 via ALPN) -> {insight-sidecar, [insight-baseline], nghttpx, HAProxy}
# -> nghttpd (h2c).
#
# Each proxy terminates TLS with the same self-signed ECDSA P-256 certificate, with one
# worker/thread/event loop pinned to $PROXY_CPU; h2load and the origin run on $LOAD_CPU. h2load makes
# new connections per run, so every run includes its handshakes (4 for small, 1 for bulk).
#
# Per target, $REPS rounds (targets take turns in each round), median reported:
#   small: h2load -c4 -m10 --warm-up-time=$WARMUP -D $DURATION /small (100 B) -> req/s, CPU µs/req
#   bulk:  h2load -c1 -m1 -n $BULK_N /bulk (10 MiB)                           -> MB/s,  CPU µs/MB
# CPU is utime+stime of the proxy's process tree from /proc around each run (refined to ns by
# schedstat), exactly as in run.sh (helpers in lib.sh, arithmetic in parse_h2load.py), divided
# by the requests completed (warm-up included) or by the body MB (10^6 B). Ratios are to HAProxy
# and to nghttpx from the same run. Writes the table to Benchmarks/results/tls-latest.md.
#
# Usage: Benchmarks/run-tls.sh [--no-build] [--reps N] [--duration SECONDS] [--keep-tmp] [SECONDS]
# Env:   INSIGHT_SIDECAR (default .build/release/insight-sidecar), BASELINE_SIDECAR=<path> (optional:
#        a second binary run with the same configuration as target "insight-baseline"),
#        DURATION=5 WARMUP=1 BULK_N=20 REPS=3 LOAD_CPU=0 PROXY_CPU=1 BUILD_TIMEOUT=150
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PARSER="$SCRIPT_DIR/parse_h2load.py"
RESULTS_MD="$SCRIPT_DIR/results/tls-latest.md"

DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
BULK_N="${BULK_N:-20}"
REPS="${REPS:-3}"
LOAD_CPU="${LOAD_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-150}"
INSIGHT_SIDECAR="${INSIGHT_SIDECAR:-.build/release/insight-sidecar}"
BASELINE_SIDECAR="${BASELINE_SIDECAR:-}"
CLK_TCK="$(getconf CLK_TCK)"
DO_BUILD=1
KEEP_TMP=0
SMALL_BYTES=100
BULK_BYTES=$((10 * 1024 * 1024))
SMOKE_SCHEME=https

while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) DO_BUILD=0 ;;
    --reps) REPS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    [0-9]*) DURATION="$1" ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=Benchmarks/lib.sh
source "$SCRIPT_DIR/lib.sh"

for tool in h2load nghttpd nghttpx haproxy openssl taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install -y nghttp2-client nghttp2-server nghttp2-proxy haproxy openssl util-linux python3)"
done
NCPU="$(nproc)"
if (( NCPU < 2 )); then
  log "WARNING: only $NCPU CPU; proxy and load generator will share CPU 0"
  LOAD_CPU=0; PROXY_CPU=0
fi

TMP="$(mktemp -d /tmp/insight-bench-tls.XXXXXX)"
OUT="$TMP/out"
mkdir -p "$OUT" "$TMP/docroot"
PIDS=()
NAMES=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$REPO_ROOT" || die "cannot cd to $REPO_ROOT"
if (( DO_BUILD )); then
  log "building insight-sidecar (swift build -c release, timeout ${BUILD_TIMEOUT}s)..."
  timeout "$BUILD_TIMEOUT" swift build -c release --product insight-sidecar >"$TMP/build.log" 2>&1 ||
    { tail -n 15 "$TMP/build.log"; die "swift build failed or timed out (${BUILD_TIMEOUT}s); build once by hand or raise BUILD_TIMEOUT"; }
fi
SIDECAR_BIN="$INSIGHT_SIDECAR"
[[ "$SIDECAR_BIN" = /* ]] || SIDECAR_BIN="$REPO_ROOT/$SIDECAR_BIN"
[[ -x "$SIDECAR_BIN" ]] || die "insight-sidecar binary $SIDECAR_BIN not found"
BASELINE_BIN=""
if [[ -n "$BASELINE_SIDECAR" ]]; then
  BASELINE_BIN="$BASELINE_SIDECAR"
  [[ "$BASELINE_BIN" = /* ]] || BASELINE_BIN="$REPO_ROOT/$BASELINE_BIN"
  [[ -x "$BASELINE_BIN" ]] || die "BASELINE_SIDECAR binary $BASELINE_BIN not found"
fi

head -c "$SMALL_BYTES" /dev/urandom >"$TMP/docroot/small"
head -c "$BULK_BYTES" /dev/urandom >"$TMP/docroot/bulk"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null ||
  die "openssl could not make the test certificate"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

TARGETS=(insight-sidecar)
[[ -n "$BASELINE_BIN" ]] && TARGETS+=(insight-baseline)
TARGETS+=(nghttpx haproxy)
declare -A PORT TPID
read -r ORIGIN_PORT PORT[insight-sidecar] PORT[insight-baseline] PORT[nghttpx] PORT[haproxy] <<<"$(free_ports 5)"

start_bg origin "$LOAD_CPU" nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN_PORT"
wait_port origin "$LAST_PID" "$ORIGIN_PORT" && SMOKE_SCHEME=http smoke origin "$ORIGIN_PORT" ||
  die "origin (nghttpd) did not come up"

# start_sidecar TARGET BIN: the sidecar terminating TLS (timing on, the default), one event loop
start_sidecar() {
  local target="$1" bin="$2" admin
  admin="$(free_ports 1)"
  cat >"$TMP/$target.yaml" <<YAML
listen: 127.0.0.1:${PORT[$target]}
upstream: 127.0.0.1:$ORIGIN_PORT
hop: bench
region: local
admin: 127.0.0.1:$admin
event_loops: 1
tls: {cert: $TMP/cert.pem, key: $TMP/key.pem}
YAML
  start_bg "$target" "$PROXY_CPU" "$bin" run --config "$TMP/$target.yaml"
  TPID[$target]=$LAST_PID
}
start_sidecar insight-sidecar "$SIDECAR_BIN"
[[ -n "$BASELINE_BIN" ]] && start_sidecar insight-baseline "$BASELINE_BIN"

start_bg nghttpx "$PROXY_CPU" nghttpx --conf=/dev/null --workers=1 --frontend="127.0.0.1,${PORT[nghttpx]}" \
  --backend="127.0.0.1,$ORIGIN_PORT;;proto=h2" --no-ocsp --accesslog-file=/dev/null --log-level=WARN \
  --errorlog-file="$TMP/nghttpx-error.log" "$TMP/key.pem" "$TMP/cert.pem"
TPID[nghttpx]=$LAST_PID

write_haproxy_cfg "$TMP/haproxy.cfg" "${PORT[haproxy]}" "$ORIGIN_PORT" "ssl crt $TMP/combined.pem alpn h2"
start_bg haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
TPID[haproxy]=$LAST_PID

for t in "${TARGETS[@]}"; do
  wait_port "$t" "${TPID[$t]}" "${PORT[$t]}" 15 && smoke "$t" "${PORT[$t]}" || die "$t did not serve correctly over TLS"
done

wait_quiet 30
log "targets: ${TARGETS[*]}; proxies on CPU $PROXY_CPU, h2load + origin on CPU $LOAD_CPU; reps=$REPS duration=${DURATION}s"
for ((rep = 1; rep <= REPS; rep++)); do
  for t in "${TARGETS[@]}"; do
    url="https://127.0.0.1:${PORT[$t]}"
    h2load_cpu "$OUT/${t}__small__$rep" "${TPID[$t]}" -c4 -m10 --warm-up-time="$WARMUP" -D "$DURATION" "$url/small"
    h2load_cpu "$OUT/${t}__bulk__$rep" "${TPID[$t]}" -c1 -m1 -n "$BULK_N" "$url/bulk"
    log "rep $rep $t: $(python3 - "$SCRIPT_DIR" "$OUT/${t}__small__$rep.txt" "$OUT/${t}__bulk__$rep.txt" "$SMALL_BYTES" "$BULK_BYTES" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1]); import parse_h2load as p
out = []
for f, test, size in ((sys.argv[2], "small", int(sys.argv[4])), (sys.argv[3], "bulk", int(sys.argv[5]))):
    r = p.parse(open(f, errors="replace").read(), None if test == "small" else size)
    c = p.cpu_figure(test, r, p.cpu_seconds(f), size)
    v = "%.0f req/s" % r.get("req_per_s", 0) if test == "small" else "%.0f MB/s" % (r.get("data_bytes", 0) / max(r.get("finished_s", 0), 1e-9) / 1e6)
    out.append("%s %s cpu=%s" % (test, v, "-" if c is None else "%.1fus/%s" % (c, "req" if test == "small" else "MB")))
    if not r["valid"]: out.append("INVALID: " + "; ".join(r["errors"]))
print("  ".join(out))
EOF
)"
  done
done

POST_BUSY="$(cpu_busy_pct)"
(( POST_BUSY < 10 )) || QUIET_NOTE="${QUIET_NOTE:+$QUIET_NOTE; }background CPU load was ${POST_BUSY}% right after the measurements"
printf 'small\t%s\nbulk\t%s\n' "$SMALL_BYTES" "$BULK_BYTES" >"$OUT/sizes.tsv"
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf 'host\t%s CPUs, %s, kernel %s\n' "$NCPU" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(uname -r)"
  printf 'versions\t%s; %s; %s; %s; insight-sidecar %s%s\n' "$(h2load --version 2>&1 | head -1)" "$(nghttpx --version 2>&1 | head -1)" \
    "$(haproxy -v 2>&1 | head -1 | awk '{print "HAProxy "$3}')" "$(openssl version)" "$(describe_bin "$SIDECAR_BIN")" \
    "${BASELINE_BIN:+; insight-baseline $(describe_bin "$BASELINE_BIN")}"
  printf 'parameters\treps=%s (median); small: -c4 -m10 --warm-up-time=%ss -D %ss; bulk: -c1 -m1 -n %s x 10 MiB; TLS with ECDSA P-256, new connections per run\n' \
    "$REPS" "$WARMUP" "$DURATION" "$BULK_N"
  [[ -n "${QUIET_NOTE:-}" ]] && printf 'WARNING\t%s\n' "$QUIET_NOTE"
} >"$OUT/meta.tsv"

echo
python3 - "$SCRIPT_DIR" "$OUT" "$RESULTS_MD" "${TARGETS[@]}" <<'EOF' || die "report generation failed"
import os, sys
sys.path.insert(0, sys.argv[1])
import parse_h2load as p

outdir, mdfile, targets = sys.argv[2], sys.argv[3], sys.argv[4:]
data = {t: p.load_target(outdir, t) for t in targets}

def val(t, test, key):
    e = data[t][test]
    return e.get(key) if e["valid"] else None

header = ["target", "small req/s", "vs HAProxy", "vs nghttpx", "CPU µs/req", "vs HAProxy", "vs nghttpx",
          "bulk MB/s", "vs HAProxy", "vs nghttpx", "CPU µs/MB", "vs HAProxy", "vs nghttpx"]
rows, notes = [], []
for t in targets:
    row = [t]
    for test, key, digits in (("small", "value", 0), ("small", "cpu", 1), ("bulk", "value", 0), ("bulk", "cpu", 0)):
        v = val(t, test, key)
        row += [p.fmt_num(v, digits), p.ratio(v, val("haproxy", test, key)), p.ratio(v, val("nghttpx", test, key))]
    rows.append(row)
    for test in ("small", "bulk"):
        if not data[t][test]["valid"]:
            notes.append("%s/%s INVALID: %s" % (t, test, "; ".join(data[t][test]["errors"][:4])))

widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
for r in [header, ["-" * w for w in widths]] + rows:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
for n in notes:
    print("NOTE: " + n)

md = ["# Insight TLS termination benchmark - latest run", ""]
with open(os.path.join(outdir, "meta.tsv")) as fh:
    md += ["- **%s**: %s" % tuple(l.rstrip("\n").split("\t", 1)) for l in fh if "\t" in l]
md += ["", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
md += ["| " + " | ".join(r) + " |" for r in rows]
md += ["", "CPU = utime+stime of the proxy's process tree from /proc during the run; µs/req over the requests",
       "completed (warm-up included), µs/MB over the body bytes (MB = 10^6 B); medians of reps. Ratios are",
       "target / HAProxy and target / nghttpx: for CPU lower is better, for req/s and MB/s higher is better."]
md += ["- " + n for n in notes]
os.makedirs(os.path.dirname(os.path.abspath(mdfile)), exist_ok=True)
with open(mdfile, "w") as fh:
    fh.write("\n".join(md) + "\n")
EOF
log "markdown written to ${RESULTS_MD#$REPO_ROOT/}"
