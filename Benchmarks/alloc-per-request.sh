#!/usr/bin/env bash
# Heap allocations per proxied request, counted by heaptrack on a release binary.
#
#   Benchmarks/alloc-per-request.sh [BINARY...]     (default .build/release/insight-sidecar)
#
# For each binary: nghttpd serves a 100-byte file; the sidecar (one event loop, timing on, and
# again with --no-timing) runs under heaptrack; h2load sends WARMUP requests, then N more
# (-c4 -m10). Allocations per request = (calls to allocation functions during the run with
# N + WARMUP requests - those of a run with WARMUP requests only) / N, so start-up and warm-up
# cost cancel out. Unlike req/s, the count barely moves between runs on a shared machine.
#
# Env: N=20000 WARMUP=2000
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-20000}"
WARMUP="${WARMUP:-2000}"
BINARIES=("$@")
[ "${#BINARIES[@]}" -gt 0 ] || BINARIES=(.build/release/insight-sidecar)
for tool in heaptrack heaptrack_print nghttpd h2load; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y heaptrack nghttp2-server nghttp2-client)"; exit 1; }
done

source Benchmarks/origin.sh
start_origin alloc

# allocations BINARY REQUESTS EXTRA_FLAGS... -> number of allocation calls for the whole run
allocations() {
    local bin="$1" requests="$2"
    shift 2
    local port admin out
    port=$(free_port)
    admin=$(free_port)
    out="$TMP/heaptrack.$RANDOM"
    heaptrack -o "$out" "$bin" run --listen "127.0.0.1:$port" --upstream "127.0.0.1:$ORIGIN" --hop bench \
        --region local --admin "127.0.0.1:$admin" --event-loops 1 --log-level error "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$port"
    h2load -n "$requests" -c4 -m10 -t1 "http://127.0.0.1:$port/small" >"$TMP/h2load.log" 2>&1
    grep -q "succeeded, 0 errored" "$TMP/h2load.log" || grep -q " 0 failed" "$TMP/h2load.log" || { cat "$TMP/h2load.log"; exit 1; }
    # $pid is heaptrack's wrapper: stop the sidecar itself, then let heaptrack finish writing.
    pkill -INT -f -- "run --listen 127.0.0.1:$port " || true
    wait "$pid" 2>/dev/null || true
    local file
    file=$(ls "$out".* | head -1)
    heaptrack_print -f "$file" 2>/dev/null | sed -n 's/^calls to allocation functions: \([0-9]*\).*/\1/p'
}

printf '%-48s %-12s %12s\n' binary mode "allocs/req"
for bin in "${BINARIES[@]}"; do
    for mode in timing bare; do
        flags=()
        [ "$mode" = bare ] && flags=(--no-timing)
        base=$(allocations "$bin" "$WARMUP" "${flags[@]}")
        full=$(allocations "$bin" $((WARMUP + N)) "${flags[@]}")
        printf '%-48s %-12s %12s\n' "$bin" "$mode" "$(python3 -c "print(f'{($full - $base) / $N:.1f}')")"
    done
done
