#!/usr/bin/env bash
# Insight benchmark harness: h2c origin <- {direct, insight-sidecar, insight-bare, [insight-baseline],
#                                            nghttpx, HAProxy} <- h2load
#
# One run starts everything on 127.0.0.1 (free ports picked at random), measures, prints a
# comparison table and writes it to Benchmarks/results/latest.md.  Bounded to ~2-3 minutes
# with the defaults (plus the optional `swift build`, which is itself capped by BUILD_TIMEOUT).
#
# Topology / CPU pinning (taskset):
#   CPU $LOAD_CPU  (default 0): h2load (load generator, 1 thread) + nghttpd origin (1 worker)
#   CPU $PROXY_CPU (default 1): the proxy under test (insight-sidecar / nghttpx / HAProxy),
#                               each configured with ONE event loop / worker / thread.
#   The proxy under test therefore gets a core of its own and never competes with the load
#   generator.  Origin and h2load share a core, identically for every target; for "direct"
#   this means the baseline is "origin + client on one core", i.e. it is a reference point,
#   not an upper bound.  Only one target is loaded at a time (idle proxies just sit in epoll).
#   On a 1-CPU machine everything falls back to CPU 0 (a warning is printed).
#
# Tests per target (each repeated $REPS times, reps interleaved across targets, median reported):
#   small   : h2load -c4 -m10 --warm-up-time=$WARMUP -D $DURATION  /small (100 B)  -> req/s
#   latency : h2load -c1 -m1 -n $LAT_N                              /small         -> mean/max "time for request"
#   bulk    : h2load -c1 -m1 -n $BULK_N                             /bulk (10 MiB) -> MB/s (body bytes / wall time)
#   A run is INVALID if any request failed/errored/timed out, was not 2xx, or (latency/bulk)
#   the received body bytes do not match n * file size.
#   CPU: around the small and the bulk run, utime+stime (+cutime+cstime) of the proxy's whole
#   process tree is read from /proc/PID/stat -> CPU us per request (small; requests incl. the
#   warm-up, which the CPU sample also covers) and CPU us per MB of body (bulk).  It moves far
#   less than req/s when the shared machine is busy (see Benchmarks/README.md).
#
# Usage: Benchmarks/run.sh [--no-build] [--reps N] [--duration SECONDS] [--keep-tmp]
# Env:   INSIGHT_SIDECAR (default .build/release/insight-sidecar, relative to repo root),
#        BASELINE_SIDECAR=<path>  (optional: a second insight-sidecar binary, e.g. a build of an older
#                                  commit; runs as target "insight-baseline" with exactly the
#                                  insight-sidecar flags, for a side-by-side before/after comparison)
#        DURATION=5 WARMUP=1 LAT_N=2000 BULK_N=20 REPS=3 LOAD_CPU=0 PROXY_CPU=1 BUILD_TIMEOUT=150
#        H2_WINDOW=<bytes>  (unset = each proxy's defaults, i.e. 65535-byte stream windows towards
#                            the origin, which caps bulk throughput; set e.g. 1048576 to raise
#                            nghttpx --backend-http2-window-size and HAProxy tune.h2.initial-window-size;
#                            insight-sidecar is always run with its own defaults)
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PARSER="$SCRIPT_DIR/parse_h2load.py"
RESULTS_MD="$SCRIPT_DIR/results/latest.md"

DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
LAT_N="${LAT_N:-2000}"
BULK_N="${BULK_N:-20}"
REPS="${REPS:-3}"
LOAD_CPU="${LOAD_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-150}"
H2_WINDOW="${H2_WINDOW:-}"   # optional per-stream HTTP/2 window (bytes) for the proxies' backend side
INSIGHT_SIDECAR="${INSIGHT_SIDECAR:-.build/release/insight-sidecar}"
BASELINE_SIDECAR="${BASELINE_SIDECAR:-}"
CLK_TCK="$(getconf CLK_TCK)"
DO_BUILD=1
KEEP_TMP=0
SMALL_BYTES=100
BULK_BYTES=$((10 * 1024 * 1024))

while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) DO_BUILD=0 ;;
    --reps) REPS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=Benchmarks/lib.sh
source "$SCRIPT_DIR/lib.sh"

for tool in h2load nghttpd nghttpx haproxy taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install -y nghttp2-client nghttp2-server nghttp2-proxy haproxy util-linux python3)"
done

NCPU="$(nproc)"
if (( NCPU < 2 )); then
  log "WARNING: only $NCPU CPU; proxy and load generator will share CPU 0 - numbers are not meaningful"
  LOAD_CPU=0; PROXY_CPU=0
fi

# --------------------------------------------------------------------------- process management
TMP="$(mktemp -d /tmp/insight-bench.XXXXXX)"
OUT="$TMP/out"
mkdir -p "$OUT" "$TMP/docroot"
PIDS=()
NAMES=()

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------- build sidecar
SIDECAR_NOTE=""
cd "$REPO_ROOT" || die "cannot cd to $REPO_ROOT"
if (( DO_BUILD )); then
  if command -v swift >/dev/null 2>&1; then
    log "building insight-sidecar (swift build -c release, timeout ${BUILD_TIMEOUT}s; log: build.log)..."
    if ! timeout "$BUILD_TIMEOUT" swift build -c release --product insight-sidecar >"$TMP/build.log" 2>&1; then
      SIDECAR_NOTE="swift build failed or timed out (${BUILD_TIMEOUT}s)"
      log "NOTE: $SIDECAR_NOTE - continuing without insight-sidecar. Last build output:"
      tail -n 15 "$TMP/build.log" | sed 's/^/    /'
    fi
  else
    SIDECAR_NOTE="swift toolchain not found"
    log "NOTE: $SIDECAR_NOTE - continuing without insight-sidecar"
  fi
fi
SIDECAR_BIN="$INSIGHT_SIDECAR"
[[ "$SIDECAR_BIN" = /* ]] || SIDECAR_BIN="$REPO_ROOT/$SIDECAR_BIN"
if [[ -z "$SIDECAR_NOTE" && ! -x "$SIDECAR_BIN" ]]; then
  SIDECAR_NOTE="binary $SIDECAR_BIN not found"
  log "NOTE: $SIDECAR_NOTE - measuring the other targets only"
fi
BASELINE_BIN=""
BASELINE_NOTE=""
if [[ -n "$BASELINE_SIDECAR" ]]; then
  BASELINE_BIN="$BASELINE_SIDECAR"
  [[ "$BASELINE_BIN" = /* ]] || BASELINE_BIN="$REPO_ROOT/$BASELINE_BIN"
  if [[ ! -x "$BASELINE_BIN" ]]; then
    BASELINE_NOTE="BASELINE_SIDECAR binary $BASELINE_BIN not found"
    log "NOTE: $BASELINE_NOTE - measuring the other targets only"
  fi
fi

# --------------------------------------------------------------------------- docroot + servers
head -c "$SMALL_BYTES" /dev/urandom >"$TMP/docroot/small"
head -c "$BULK_BYTES" /dev/urandom >"$TMP/docroot/bulk"

read -r ORIGIN_PORT SIDECAR_PORT ADMIN_PORT NGHTTPX_PORT HAPROXY_PORT BARE_PORT BARE_ADMIN_PORT BASE_PORT BASE_ADMIN_PORT \
  <<<"$(free_ports 9)"
# insight-sidecar: timing headers and hop metrics on (the default); insight-bare: --no-timing;
# insight-baseline (only with BASELINE_SIDECAR): the other binary, same flags as insight-sidecar.
declare -A PORT=([direct]=$ORIGIN_PORT [insight-sidecar]=$SIDECAR_PORT [insight-baseline]=$BASE_PORT [insight-bare]=$BARE_PORT [nghttpx]=$NGHTTPX_PORT [haproxy]=$HAPROXY_PORT)
TARGETS=(direct insight-sidecar)
[[ -n "$BASELINE_SIDECAR" ]] && TARGETS+=(insight-baseline)
TARGETS+=(insight-bare nghttpx haproxy)
declare -A STATUS NOTE
declare -A TPID   # target -> pid of the proxy process (root of the tree whose CPU time is measured)

# origin: nghttpd, h2c, single worker (its default), no TLS
start_bg origin "$LOAD_CPU" nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN_PORT"
wait_port origin "$LAST_PID" "$ORIGIN_PORT" && smoke origin "$ORIGIN_PORT" || die "origin (nghttpd) did not come up"
STATUS[direct]=ok

# nghttpx: h2c frontend -> h2c backend, 1 worker, no config file, no access log, errors to file
start_bg nghttpx "$PROXY_CPU" nghttpx --conf=/dev/null \
  --frontend="127.0.0.1,$NGHTTPX_PORT;no-tls" \
  --backend="127.0.0.1,$ORIGIN_PORT;;proto=h2" \
  --workers=1 --no-ocsp --log-level=WARN --errorlog-file="$TMP/nghttpx-error.log" \
  ${H2_WINDOW:+--backend-http2-window-size="$H2_WINDOW"}
TPID[nghttpx]=$LAST_PID
if wait_port nghttpx "$LAST_PID" "$NGHTTPX_PORT" && smoke nghttpx "$NGHTTPX_PORT"; then
  STATUS[nghttpx]=ok
else
  STATUS[nghttpx]=skipped; NOTE[nghttpx]="failed to start or smoke test failed"
fi

# HAProxy: mode http, h2c both sides, 1 thread, no logging
write_haproxy_cfg "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$ORIGIN_PORT" "proto h2" 1000 \
  "$([[ -n "$H2_WINDOW" ]] && echo "tune.h2.initial-window-size $H2_WINDOW")"
if haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1; then
  start_bg haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
  TPID[haproxy]=$LAST_PID
  if wait_port haproxy "$LAST_PID" "$HAPROXY_PORT" && smoke haproxy "$HAPROXY_PORT"; then
    STATUS[haproxy]=ok
  else
    STATUS[haproxy]=skipped; NOTE[haproxy]="failed to start or smoke test failed"
  fi
else
  cat "$TMP/haproxy-check.log"
  STATUS[haproxy]=skipped; NOTE[haproxy]="haproxy -c rejected the generated config"
fi

# insight-sidecar
if [[ -z "$SIDECAR_NOTE" ]]; then
  start_bg insight-sidecar "$PROXY_CPU" "$SIDECAR_BIN" run \
    --listen "127.0.0.1:$SIDECAR_PORT" --upstream "127.0.0.1:$ORIGIN_PORT" \
    --hop bench --region local --admin "127.0.0.1:$ADMIN_PORT" --event-loops 1
  TPID[insight-sidecar]=$LAST_PID
  if wait_port insight-sidecar "$LAST_PID" "$SIDECAR_PORT" 15 && smoke insight-sidecar "$SIDECAR_PORT"; then
    STATUS[insight-sidecar]=ok
  else
    SIDECAR_NOTE="started but did not serve correctly (see log above)"
  fi
fi
if [[ -n "$SIDECAR_NOTE" ]]; then
  STATUS[insight-sidecar]=skipped; NOTE[insight-sidecar]="$SIDECAR_NOTE"
  STATUS[insight-bare]=skipped; NOTE[insight-bare]="$SIDECAR_NOTE"
else
  start_bg insight-bare "$PROXY_CPU" "$SIDECAR_BIN" run --no-timing \
    --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$ORIGIN_PORT" \
    --hop bench --region local --admin "127.0.0.1:$BARE_ADMIN_PORT" --event-loops 1
  TPID[insight-bare]=$LAST_PID
  if wait_port insight-bare "$LAST_PID" "$BARE_PORT" 15 && smoke insight-bare "$BARE_PORT"; then
    STATUS[insight-bare]=ok
  else
    STATUS[insight-bare]=skipped; NOTE[insight-bare]="started but did not serve correctly"
  fi
fi

# insight-baseline: BASELINE_SIDECAR, run exactly like insight-sidecar (timing on)
if [[ -n "$BASELINE_SIDECAR" ]]; then
  if [[ -z "$BASELINE_NOTE" ]]; then
    start_bg insight-baseline "$PROXY_CPU" "$BASELINE_BIN" run \
      --listen "127.0.0.1:$BASE_PORT" --upstream "127.0.0.1:$ORIGIN_PORT" \
      --hop bench --region local --admin "127.0.0.1:$BASE_ADMIN_PORT" --event-loops 1
    TPID[insight-baseline]=$LAST_PID
    if wait_port insight-baseline "$LAST_PID" "$BASE_PORT" 15 && smoke insight-baseline "$BASE_PORT"; then
      STATUS[insight-baseline]=ok
    else
      BASELINE_NOTE="started but did not serve correctly (see log above)"
    fi
  fi
  if [[ -n "$BASELINE_NOTE" ]]; then
    STATUS[insight-baseline]=skipped; NOTE[insight-baseline]="$BASELINE_NOTE"
  fi
fi

# --------------------------------------------------------------------------- measure
run_h2load() {  # run_h2load TARGET TEST REP ARGS...
  local target="$1" test="$2" rep="$3"; shift 3
  local f="$OUT/${target}__${test}__${rep}.txt"
  # hard cap per run; a hung proxy yields an INVALID (incomplete) result instead of a hung script
  timeout 60 taskset -c "$LOAD_CPU" h2load "$@" >"$f" 2>&1
  local rc=$?
  (( rc == 0 )) || echo "h2load exit status $rc" >>"$f"
  return 0
}

# run_h2load_cpu TARGET TEST REP ARGS...: run_h2load, plus the proxy tree's CPU time before/after in
# $OUT/TARGET__TEST__REP.cpu ("TICKS_BEFORE TICKS_AFTER CLK_TCK NS_BEFORE NS_AFTER");
# no .cpu file for direct (no proxy) or if the proxy died
run_h2load_cpu() {
  local target="$1" test="$2" rep="$3" pid="${TPID[$1]:-}" before="" after=""
  [[ -n "$pid" ]] && before="$(proc_tree_cpu "$pid")"
  run_h2load "$@"
  [[ -n "$before" ]] && after="$(proc_tree_cpu "$pid")"
  if [[ -n "$after" ]]; then
    printf '%s %s %s %s %s\n' "${before% *}" "${after% *}" "$CLK_TCK" "${before#* }" "${after#* }" \
      >"$OUT/${target}__${test}__${rep}.cpu"
  fi
  return 0
}

summary() {  # summary FILE TEST BODYSIZE: one-line summary of a result file for the progress log
  python3 -c '
import sys; sys.path.insert(0, sys.argv[1]); import parse_h2load as p
r = p.parse(open(sys.argv[2], errors="replace").read())
s = "req/s=%.0f mean=%.0fus max=%.0fus" % (r.get("req_per_s", 0), r.get("req_mean_s", 0)*1e6, r.get("req_max_s", 0)*1e6)
if r.get("finished_s") and r.get("data_bytes"): s += " body=%.0fMB/s" % (r["data_bytes"]/r["finished_s"]/1e6)
c = p.cpu_figure(sys.argv[3], r, p.cpu_seconds(sys.argv[2]), int(sys.argv[4]))
if c is not None: s += " cpu=%.1fus/%s" % (c, "MB" if sys.argv[3] == "bulk" else "req")
print(s + ("" if r["valid"] else "  INVALID: " + "; ".join(r["errors"])))
' "$SCRIPT_DIR" "$1" "$2" "$3"
}

# e.g. compiler processes left behind by a timed-out `swift build`, or someone else's build
wait_quiet 30

ACTIVE=()
for t in "${TARGETS[@]}"; do [[ "${STATUS[$t]}" == ok ]] && ACTIVE+=("$t"); done
log "targets: ${ACTIVE[*]}  (ports: origin=$ORIGIN_PORT sidecar=$SIDECAR_PORT bare=$BARE_PORT${BASELINE_SIDECAR:+ baseline=$BASE_PORT} nghttpx=$NGHTTPX_PORT haproxy=$HAPROXY_PORT)"
log "pinning: h2load+origin on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU; reps=$REPS duration=${DURATION}s warmup=${WARMUP}s"

for ((rep = 1; rep <= REPS; rep++)); do
  for t in "${ACTIVE[@]}"; do
    url="http://127.0.0.1:${PORT[$t]}"
    if ! kill -0 "${PIDS[0]}" 2>/dev/null; then die "origin died"; fi
    run_h2load_cpu "$t" small "$rep" -c4 -m10 --warm-up-time="$WARMUP" -D "$DURATION" "$url/small"
    log "rep $rep $t small:   $(summary "$OUT/${t}__small__${rep}.txt" small "$SMALL_BYTES")"
    run_h2load "$t" latency "$rep" -c1 -m1 -n "$LAT_N" "$url/small"
    log "rep $rep $t latency: $(summary "$OUT/${t}__latency__${rep}.txt" latency "$SMALL_BYTES")"
    run_h2load_cpu "$t" bulk "$rep" -c1 -m1 -n "$BULK_N" "$url/bulk"
    log "rep $rep $t bulk:    $(summary "$OUT/${t}__bulk__${rep}.txt" bulk "$BULK_BYTES")"
  done
done

# --------------------------------------------------------------------------- report
POST_BUSY="$(cpu_busy_pct)"
if (( POST_BUSY >= 10 )); then
  QUIET_NOTE="${QUIET_NOTE:+$QUIET_NOTE; }background CPU load was ${POST_BUSY}% right after the measurements - results may be perturbed"
  log "WARNING: background CPU load ${POST_BUSY}% after the measurements"
fi
for t in "${TARGETS[@]}"; do
  printf '%s\t%s\t%s\n' "$t" "${STATUS[$t]}" "${NOTE[$t]:-}"
done >"$OUT/targets.tsv"
printf 'small\t%s\nlatency\t%s\nbulk\t%s\n' "$SMALL_BYTES" "$SMALL_BYTES" "$BULK_BYTES" >"$OUT/sizes.tsv"
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  printf 'host\t%s CPUs, %s, kernel %s\n' "$NCPU" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(uname -r)"
  printf 'pinning\th2load + origin (nghttpd) on CPU %s; proxy under test on CPU %s; each proxy with 1 worker/thread/event loop\n' "$LOAD_CPU" "$PROXY_CPU"
  printf 'versions\t%s; %s; %s; insight-sidecar %s%s\n' "$(h2load --version 2>&1 | head -1)" "$(nghttpx --version 2>&1 | head -1)" \
    "$(haproxy -v 2>&1 | head -1 | awk '{print "HAProxy "$3}')" \
    "$( [[ "${STATUS[insight-sidecar]}" == ok ]] && describe_bin "$SIDECAR_BIN" || echo 'n/a')" \
    "$( [[ "${STATUS[insight-baseline]:-}" == ok ]] && echo "; insight-baseline $(describe_bin "$BASELINE_BIN")")"
  printf 'h2 windows\t%s\n' "${H2_WINDOW:-proxy defaults (nghttpx/HAProxy: 65535-byte stream window towards origin)}"
  printf 'parameters\treps=%s (median), small: -c4 -m10 --warm-up-time=%ss -D %ss; latency: -c1 -m1 -n %s; bulk: -c1 -m1 -n %s x 10 MiB\n' \
    "$REPS" "$WARMUP" "$DURATION" "$LAT_N" "$BULK_N"
  printf 'CPU\tutime+stime of the proxy process tree from /proc/PID/stat (CLK_TCK=%s; refined to ns by the threads'"'"' schedstat when the two agree) around the small and bulk runs\n' "$CLK_TCK"
  [[ -n "$QUIET_NOTE" ]] && printf 'WARNING\t%s\n' "$QUIET_NOTE"
} >"$OUT/meta.tsv"

echo
python3 "$PARSER" report "$OUT" "$RESULTS_MD" || die "report generation failed"
echo
log "markdown written to ${RESULTS_MD#$REPO_ROOT/}"
