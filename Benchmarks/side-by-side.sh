#!/usr/bin/env bash
# CPU per request of two proxies measured at the same moment, under the same load.
#
# Why: on this shared 2-core machine the CPU time one proxy spends per request moves by ±25-30 %
# from one run to the next (the host's other tenants change how fast a core is), so two
# proxies measured one after the other (Benchmarks/run.sh) compare to within about ±0.15×.
# Here both proxies of a pair run on the same core ($PROXY_CPU) and get identical loads
# (`h2load -n N -c4 -m10` on a 100-byte file, one h2load per proxy, started together, on
# $LOAD_CPU with the nghttpd origin): whatever the core's speed is, both see it. Two builds of
# the sidecar compare to about ±1 % (an A/A pair of one binary reads 0.99-1.01); the ratio of
# two different proxies moves more, about ±5 % between runs (0.05-0.1x), since their batching
# answers the core's speed differently; still a third of what sequential runs move. Each
# proxy's CPU is its own process tree's (schedstat nanoseconds, /proc).
#
# Pairs (each REPS times, the median ratio printed; the first of a pair is the numerator):
#   insight / HAProxy, insight / nghttpx, insight / insight --no-timing,
#   insight --no-timing / HAProxy, and insight / baseline with BASELINE_SIDECAR.
# Every proxy runs with one worker / thread / event loop, as in run.sh. A rep whose h2load
# reports a failed or errored request is dropped and said so.
#
# With --tls every proxy terminates TLS (h2 by ALPN, a P-256 certificate made for the run, as
# run-tls.sh does; h2c to the origin) and the --no-timing pairs are left out. Each h2load makes
# its 4 connections (4 handshakes) once per rep, a negligible part of N requests.
#
# The run fails (exit 1, the results file left as it was) if a proxy exits, or if a pair has
# no rep without a failed request; --keep-tmp keeps the h2load and proxy logs.
#
# Usage: Benchmarks/side-by-side.sh [--reps N] [--requests N] [--tls] [--keep-tmp]
# Env:   INSIGHT_SIDECAR (default .build/release/insight-sidecar), BASELINE_SIDECAR (optional),
#        REPS=5 N=200000 LOAD_CPU=0 PROXY_CPU=1
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
REPS="${REPS:-5}"
N="${N:-200000}"
LOAD_CPU="${LOAD_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
INSIGHT_SIDECAR="${INSIGHT_SIDECAR:-.build/release/insight-sidecar}"
BASELINE_SIDECAR="${BASELINE_SIDECAR:-}"
KEEP_TMP=0
TLS=0
SMALL_BYTES=100
BULK_BYTES=$((1024 * 1024))
PARSER="$SCRIPT_DIR/parse_h2load.py"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --reps) REPS="${2:-}"; shift ;;
    --requests) N="${2:-}"; shift ;;
    --tls) TLS=1 ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || { echo "--reps / REPS must be a positive integer (got '$REPS')" >&2; exit 2; }
[[ "$N" =~ ^[0-9]+$ ]] && (( N >= 1000 )) || { echo "--requests / N must be an integer >= 1000 (got '$N')" >&2; exit 2; }

# shellcheck source=Benchmarks/lib.sh
source "$SCRIPT_DIR/lib.sh"
for tool in h2load nghttpd nghttpx haproxy openssl taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (make deps)"
done
(( $(nproc) >= 2 )) || die "needs 2 CPUs (proxies on one, load on the other)"

cd "$REPO_ROOT" || die "cannot cd to $REPO_ROOT"
SIDECAR_BIN="$INSIGHT_SIDECAR"; [[ "$SIDECAR_BIN" = /* ]] || SIDECAR_BIN="$REPO_ROOT/$SIDECAR_BIN"
[[ -x "$SIDECAR_BIN" ]] || die "$SIDECAR_BIN not found (swift build -c release --product insight-sidecar)"
BASELINE_BIN=""
if [[ -n "$BASELINE_SIDECAR" ]]; then
  BASELINE_BIN="$BASELINE_SIDECAR"; [[ "$BASELINE_BIN" = /* ]] || BASELINE_BIN="$REPO_ROOT/$BASELINE_BIN"
  [[ -x "$BASELINE_BIN" ]] || die "BASELINE_SIDECAR $BASELINE_BIN not found"
fi

TMP="$(mktemp -d /tmp/insight-side-by-side.XXXXXX)"
mkdir -p "$TMP/docroot"
PIDS=(); NAMES=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
head -c "$SMALL_BYTES" /dev/urandom >"$TMP/docroot/small"
head -c "$BULK_BYTES" /dev/urandom >"$TMP/docroot/bulk"

read -r ORIGIN_PORT P_INSIGHT P_BARE P_BASE P_NGHTTPX P_HAPROXY A1 A2 A3 < <(free_ports 9 | tr '\n' ' ')
declare -A PORT=([insight]=$P_INSIGHT [insight-bare]=$P_BARE [baseline]=$P_BASE [nghttpx]=$P_NGHTTPX [haproxy]=$P_HAPROXY)
declare -A TPID

start_bg origin "$LOAD_CPU" nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN_PORT"
wait_port origin "$LAST_PID" "$ORIGIN_PORT" && smoke origin "$ORIGIN_PORT" || die "origin (nghttpd) did not come up"

start_target() {  # start_target NAME PORT CMD...
  local name="$1" port="$2"; shift 2
  start_bg "$name" "$PROXY_CPU" "$@"
  TPID[$name]=$LAST_PID
  wait_port "$name" "$LAST_PID" "$port" 15 && smoke "$name" "$port" || die "$name did not serve"
}
SCHEME=http
if (( TLS )); then
  SCHEME=https
  export SMOKE_SCHEME=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null ||
    die "openssl could not make the test certificate"
  cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"
fi

start_sidecar() {  # start_sidecar NAME BIN PORT ADMIN_PORT [--no-timing]
  local name="$1" bin="$2" port="$3" admin="$4"; shift 4
  if (( TLS )); then
    printf 'listen: 127.0.0.1:%s\nupstream: 127.0.0.1:%s\nhop: bench\nregion: local\nadmin: 127.0.0.1:%s\nevent_loops: 1\ntls: {cert: %s, key: %s}\n' \
      "$port" "$ORIGIN_PORT" "$admin" "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/$name.yaml"
    start_target "$name" "$port" "$bin" run --config "$TMP/$name.yaml" "$@"
  else
    start_target "$name" "$port" "$bin" run --listen "127.0.0.1:$port" --upstream "127.0.0.1:$ORIGIN_PORT" \
      --hop bench --region local --admin "127.0.0.1:$admin" --event-loops 1 "$@"
  fi
}
start_sidecar insight "$SIDECAR_BIN" "$P_INSIGHT" "$A1"
(( TLS )) || start_sidecar insight-bare "$SIDECAR_BIN" "$P_BARE" "$A2" --no-timing
[[ -n "$BASELINE_BIN" ]] && start_sidecar baseline "$BASELINE_BIN" "$P_BASE" "$A3"
if (( TLS )); then
  start_target nghttpx "$P_NGHTTPX" nghttpx --conf=/dev/null --frontend="127.0.0.1,$P_NGHTTPX" \
    --backend="127.0.0.1,$ORIGIN_PORT;;proto=h2" --workers=1 --no-ocsp --log-level=WARN \
    --accesslog-file=/dev/null --errorlog-file="$TMP/nghttpx-error.log" "$TMP/key.pem" "$TMP/cert.pem"
  write_haproxy_cfg "$TMP/haproxy.cfg" "$P_HAPROXY" "$ORIGIN_PORT" "ssl crt $TMP/combined.pem alpn h2" 1000 ""
else
  start_target nghttpx "$P_NGHTTPX" nghttpx --conf=/dev/null --frontend="127.0.0.1,$P_NGHTTPX;no-tls" \
    --backend="127.0.0.1,$ORIGIN_PORT;;proto=h2" --workers=1 --no-ocsp --log-level=WARN \
    --errorlog-file="$TMP/nghttpx-error.log"
  write_haproxy_cfg "$TMP/haproxy.cfg" "$P_HAPROXY" "$ORIGIN_PORT" "proto h2" 1000 ""
fi
haproxy -c -q -f "$TMP/haproxy.cfg" >/dev/null 2>&1 || die "haproxy -c rejected the generated config"
start_target haproxy "$P_HAPROXY" haproxy -db -f "$TMP/haproxy.cfg"

cpu_ns() { local c; c="$(proc_tree_cpu "$1")"; echo "${c#* }"; }

load() {  # load NAME N LOGFILE: h2load against NAME
  taskset -c "$LOAD_CPU" timeout 120 h2load -n "$2" -c4 -m10 -t1 "$SCHEME://127.0.0.1:${PORT[$1]}/small" >"$3" 2>&1
}

for name in "${!TPID[@]}"; do load "$name" 20000 "$TMP/warm-$name.log"; done

PAIRS=("insight haproxy" "insight nghttpx")
(( TLS )) || PAIRS+=("insight insight-bare" "insight-bare haproxy")
[[ -n "$BASELINE_BIN" ]] && PAIRS+=("insight baseline")

log "side by side ($SCHEME): $N requests per proxy per rep, $REPS reps, proxies on CPU $PROXY_CPU, load on CPU $LOAD_CPU"
declare -A RATIOS CPU_A CPU_B
alive_or_die() {  # every proxy still running, or fail naming the one that exited
  local name
  for name in "${!TPID[@]}"; do
    kill -0 "${TPID[$name]}" 2>/dev/null || die "$name (pid ${TPID[$name]}) exited during the run; see its log with --keep-tmp"
  done
}

for rep in $(seq "$REPS"); do
  for pair in "${PAIRS[@]}"; do
    alive_or_die
    read -r a b <<<"$pair"
    a0=$(cpu_ns "${TPID[$a]}"); b0=$(cpu_ns "${TPID[$b]}")
    load "$a" "$N" "$TMP/a.log" & la=$!
    load "$b" "$N" "$TMP/b.log" & lb=$!
    wait "$la" "$lb"
    a1=$(cpu_ns "${TPID[$a]}"); b1=$(cpu_ns "${TPID[$b]}")
    alive_or_die
    if ! grep -q " 0 failed, 0 errored" "$TMP/a.log" || ! grep -q " 0 failed, 0 errored" "$TMP/b.log"; then
      cp "$TMP/a.log" "$TMP/failed-$rep-$a.log"; cp "$TMP/b.log" "$TMP/failed-$rep-$b.log"
      log "rep $rep $a/$b: a request failed; rep dropped (h2load logs kept with --keep-tmp)"; continue
    fi
    line=$(python3 -c "a=($a1-$a0)/1e3/$N; b=($b1-$b0)/1e3/$N; print(f'{a:.2f} {b:.2f} {a/b:.3f}')")
    read -r ca cb r <<<"$line"
    RATIOS[$pair]+="$r "; CPU_A[$pair]+="$ca "; CPU_B[$pair]+="$cb "
    log "rep $rep  $a $ca µs/req  $b $cb µs/req  ratio $r"
  done
done

for pair in "${PAIRS[@]}"; do
  [[ -n "${RATIOS[$pair]:-}" ]] || die "pair '$pair' has no rep without a failed request; results not written"
done

RESULTS_MD="$SCRIPT_DIR/results/side-by-side-latest.md"
(( TLS )) && RESULTS_MD="$SCRIPT_DIR/results/side-by-side-tls-latest.md"
{
echo "# CPU per request side by side$( (( TLS )) && echo ", TLS termination") - latest run"
echo
echo "- **date**: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- **host**: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
echo "- **parameters**: $N requests per proxy per rep (h2load -c4 -m10, 100-byte file), $REPS reps; both proxies of a pair on CPU $PROXY_CPU at the same time, loads and origin on CPU $LOAD_CPU"
echo "- **insight-sidecar**: $(describe_bin "$SIDECAR_BIN")${BASELINE_BIN:+; baseline: $(describe_bin "$BASELINE_BIN")}"
echo
echo "| pair (A / B) | A CPU µs/req | B CPU µs/req | A / B, median | A / B, each rep |"
echo "|---|---:|---:|---:|---|"
for pair in "${PAIRS[@]}"; do
  read -r a b <<<"$pair"
  python3 - "$a" "$b" "${CPU_A[$pair]:-}" "${CPU_B[$pair]:-}" "${RATIOS[$pair]:-}" <<'PY'
import statistics, sys
a, b, ca, cb, rs = sys.argv[1:6]
ca, cb, rs = [float(x) for x in ca.split()], [float(x) for x in cb.split()], [float(x) for x in rs.split()]
if not rs:
    print(f"| {a} / {b} | - | - | - | no valid rep |")
else:
    print(f"| {a} / {b} | {statistics.median(ca):.2f} | {statistics.median(cb):.2f} | "
          f"**{statistics.median(rs):.3f}×** | {' '.join(f'{r:.3f}' for r in rs)} |")
PY
done
} | tee "$RESULTS_MD"
