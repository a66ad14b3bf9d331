#!/usr/bin/env bash
# CPU per request and a `perf` profile of one insight-sidecar under small-request load.
#
#   Benchmarks/profile.sh BINARY OUT_PREFIX [sidecar run flags...]
#
# nghttpd (CPU 0) serves a 100-byte file; the sidecar (one event loop, CPU 1) proxies it;
# h2load (CPU 0) sends 20,000 warm-up requests, then N (default 200,000, -c4 -m10) while
# `perf record -g` (default cpu-clock event) samples the sidecar for 3 s. Prints the sidecar's
# CPU µs per request over the N requests (utime + stime from /proc; perf's own overhead
# included, so compare two binaries with this script back to back, not with Benchmarks/run.sh).
# Read the profile with: perf report -i OUT_PREFIX.perf --no-children --sort symbol --stdio
# Env: N=200000
set -euo pipefail
BIN="$1"; OUT="$2"; shift 2
N="${N:-200000}"
source "$(dirname "$0")/origin.sh"
start_origin profile 0
PORT=$(free_port); ADMIN=$(free_port)
taskset -c 1 "$BIN" run --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$ORIGIN" --hop bench --region local \
    --admin "127.0.0.1:$ADMIN" --event-loops 1 --log-level error "$@" >"$TMP/sidecar.log" 2>&1 &
SIDECAR=$!
wait_port "$PORT"
taskset -c 0 h2load -n 20000 -c4 -m10 -t1 "http://127.0.0.1:$PORT/small" >/dev/null
cpu() { sed 's/.*) //' "/proc/$SIDECAR/stat" | awk '{print $12 + $13}'; }
before=$(cpu)
taskset -c 0 h2load -n "$N" -c4 -m10 -t1 "http://127.0.0.1:$PORT/small" >"$TMP/h2load.log" &
LOAD=$!
perf record -g -o "$OUT.perf" -p "$SIDECAR" -- sleep 3 >/dev/null 2>&1 || true
wait "$LOAD"
after=$(cpu)
grep -q " 0 failed, 0 errored" "$TMP/h2load.log" || { cat "$TMP/h2load.log"; exit 1; }
echo "cpu us/req: $(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / $N, 2))")"
grep -E "finished in" "$TMP/h2load.log"
