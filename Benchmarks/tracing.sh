#!/usr/bin/env bash
# Tracing cost: CPU per request of insight-sidecar with tracing off, and on at sample ratios
# 0.01 and 1.0 (issue 13; target: at most 3 % over "off" at 0.01).
#
#   h2c origin (nghttpd) <- insight-sidecar --event-loops 1 [--tracing-*] <- h2load
#                                 \-> OTLP/HTTP sink on loopback (POST /v1/traces -> 200)
#
# Three sidecars (one per mode) run side by side on $PROXY_CPU, each with one event loop; only
# one is loaded at a time, in rounds (off, 0.01, 1.0 in each round) so that machine noise hits
# every mode alike. Each run is run.sh's small-request case:
#   h2load -c4 -m10 --warm-up-time=$WARMUP -D $DURATION /small (100 B)
# and the sidecar's CPU time (utime+stime of its process, from /proc, refined to ns by
# schedstat) around it, divided by the requests completed. The sink answers every export with
# 200 and an empty ExportTraceServiceResponse without decoding it; it runs on $LOAD_CPU, so
# its cost is not charged to the sidecar. After the runs, each sidecar's
# insight_spans_{started,exported,dropped}_total show that the sampling happened as asked.
#
# Prints, per mode, the median CPU µs per request over the reps, each rep, the ratio to "off"
# and req/s, and writes the table to Benchmarks/results/tracing-latest.md.
#
# Usage: Benchmarks/tracing.sh [--no-build] [--reps N] [--duration SECONDS] [--keep-tmp]
# Env:   INSIGHT_SIDECAR (default .build/release/insight-sidecar), RATIOS="0.01 1.0",
#        DURATION=5 WARMUP=1 REPS=3 LOAD_CPU=0 PROXY_CPU=1 BUILD_TIMEOUT=150
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PARSER="$SCRIPT_DIR/parse_h2load.py"
RESULTS_MD="$SCRIPT_DIR/results/tracing-latest.md"

DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
REPS="${REPS:-3}"
LOAD_CPU="${LOAD_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-150}"
RATIOS="${RATIOS:-0.01 1.0}"
INSIGHT_SIDECAR="${INSIGHT_SIDECAR:-.build/release/insight-sidecar}"
CLK_TCK="$(getconf CLK_TCK)"
DO_BUILD=1
KEEP_TMP=0
SMALL_BYTES=100
BULK_BYTES=$((1024 * 1024))

while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) DO_BUILD=0 ;;
    --reps) REPS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
(( WARMUP + DURATION <= 10 )) || { echo "WARMUP + DURATION must be at most 10 s" >&2; exit 2; }

# shellcheck source=Benchmarks/lib.sh
source "$SCRIPT_DIR/lib.sh"

for tool in h2load nghttpd taskset python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install -y nghttp2-client nghttp2-server util-linux python3 curl)"
done
NCPU="$(nproc)"
if (( NCPU < 2 )); then
  log "WARNING: only $NCPU CPU; sidecar and load generator will share CPU 0"
  LOAD_CPU=0; PROXY_CPU=0
fi

TMP="$(mktemp -d /tmp/insight-bench-tracing.XXXXXX)"
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

head -c "$SMALL_BYTES" /dev/urandom >"$TMP/docroot/small"
head -c "$BULK_BYTES" /dev/urandom >"$TMP/docroot/bulk"

MODES=(off)
for r in $RATIOS; do MODES+=("$r"); done
read -r ORIGIN_PORT SINK_PORT <<<"$(free_ports 2)"
declare -A PORT ADMIN TPID

start_bg origin "$LOAD_CPU" nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN_PORT"
wait_port origin "$LAST_PID" "$ORIGIN_PORT" && smoke origin "$ORIGIN_PORT" || die "origin (nghttpd) did not come up"

# The OTLP/HTTP sink: 200 and an empty (valid) ExportTraceServiceResponse for every POST,
# counting exports and bytes; GET /stats returns the counts.
cat >"$TMP/otlp_sink.py" <<'EOF'
import http.server, sys
exports = body_bytes = 0
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, status, body=b"", ctype="application/x-protobuf"):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        global exports, body_bytes
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        exports += 1
        body_bytes += n
        self.reply(200 if self.path == "/v1/traces" else 404)
    def do_GET(self):
        self.reply(200, f"{exports} {body_bytes}\n".encode(), "text/plain")
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
EOF
start_bg otlp-sink "$LOAD_CPU" python3 "$TMP/otlp_sink.py" "$SINK_PORT"
wait_port otlp-sink "$LAST_PID" "$SINK_PORT" || die "OTLP sink did not come up"

for m in "${MODES[@]}"; do
  read -r PORT[$m] ADMIN[$m] <<<"$(free_ports 2)"
  flags=()
  [[ "$m" == off ]] || flags=(--tracing-otlp-endpoint "http://127.0.0.1:$SINK_PORT" --tracing-sample-ratio "$m")
  start_bg "sidecar-$m" "$PROXY_CPU" "$SIDECAR_BIN" run \
    --listen "127.0.0.1:${PORT[$m]}" --upstream "127.0.0.1:$ORIGIN_PORT" \
    --hop bench --region local --admin "127.0.0.1:${ADMIN[$m]}" --event-loops 1 "${flags[@]}"
  TPID[$m]=$LAST_PID
  wait_port "sidecar-$m" "$LAST_PID" "${PORT[$m]}" 15 && smoke "sidecar-$m" "${PORT[$m]}" ||
    die "sidecar with tracing $m did not serve correctly"
done

# metric NAME MODE: the sum of the sidecar's samples of that metric (0 if absent)
metric() {
  curl -s "http://127.0.0.1:${ADMIN[$2]}/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d", s }'
}

wait_quiet 30
log "modes: ${MODES[*]}; sidecars on CPU $PROXY_CPU, h2load + origin + sink on CPU $LOAD_CPU; reps=$REPS"
for ((rep = 1; rep <= REPS; rep++)); do
  for m in "${MODES[@]}"; do
    f="$OUT/${m}__${rep}.txt"
    before="$(proc_tree_cpu "${TPID[$m]}")"
    timeout 30 taskset -c "$LOAD_CPU" h2load -c4 -m10 --warm-up-time="$WARMUP" -D "$DURATION" \
      "http://127.0.0.1:${PORT[$m]}/small" >"$f" 2>&1 || echo "h2load exit status $?" >>"$f"
    after="$(proc_tree_cpu "${TPID[$m]}")"
    [[ -n "$before" && -n "$after" ]] || die "sidecar with tracing $m died"
    printf '%s %s %s %s %s\n' "${before% *}" "${after% *}" "$CLK_TCK" "${before#* }" "${after#* }" >"$OUT/${m}__${rep}.cpu"
    log "rep $rep tracing=$m: $(python3 "$SCRIPT_DIR/tracing_report.py" one "$f" "$SMALL_BYTES")"
  done
done

POST_BUSY="$(cpu_busy_pct)"
(( POST_BUSY < 10 )) || QUIET_NOTE="${QUIET_NOTE:+$QUIET_NOTE; }background CPU load was ${POST_BUSY}% right after the measurements"
sleep 3   # a few export intervals (1 s), so that the span counters below are final
for m in "${MODES[@]}"; do
  printf '%s\t%s\t%s\t%s\n' "$m" "$(metric insight_spans_started_total "$m")" \
    "$(metric insight_spans_exported_total "$m")" "$(metric insight_spans_dropped_total "$m")"
done >"$OUT/spans.tsv"
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf 'host\t%s CPUs, %s, kernel %s\n' "$NCPU" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(uname -r)"
  printf 'binary\t%s\n' "$(describe_bin "$SIDECAR_BIN")"
  printf 'parameters\treps=%s (median); h2load -c4 -m10 --warm-up-time=%ss -D %ss /small (100 B); sidecar --event-loops 1 on CPU %s\n' \
    "$REPS" "$WARMUP" "$DURATION" "$PROXY_CPU"
  printf 'sink\t%s exports, %s bytes received\n' $(curl -s "http://127.0.0.1:$SINK_PORT/stats")
  [[ -n "${QUIET_NOTE:-}" ]] && printf 'WARNING\t%s\n' "$QUIET_NOTE"
} >"$OUT/meta.tsv"
echo
python3 "$SCRIPT_DIR/tracing_report.py" report "$OUT" "$SMALL_BYTES" "$RESULTS_MD" "${MODES[@]}" ||
  die "report generation failed"
log "markdown written to ${RESULTS_MD#$REPO_ROOT/}"
