#!/usr/bin/env bash
# CPU per request of a sidecar with another sidecar inwards of it: the hop that reads and
# appends to the inner hops' `insight-chain` and `insight-timing` (Benchmarks/run.sh measures
# a single sidecar in front of the origin, which reads neither).
#
#   Benchmarks/chain.sh [BINARY...]      (default .build/release/insight-sidecar)
#
# For each binary, alternating, REPS times: nghttpd serves a 100-byte file; an inner sidecar
# (CPU 0, timing on) proxies it; the outer sidecar under test (CPU 1, one event loop) proxies
# the inner one, once with timing on and once with --no-timing; h2load (CPU 0) sends N
# requests with `te: trailers` (so that the inner hop adds `insight-timing` trailers), -c4 -m10.
# Prints the outer sidecar's CPU µs per request (utime + stime from /proc over the N requests)
# for every run, and the median per binary and mode.
#
# Env: N=100000 REPS=3
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
REPS="${REPS:-3}"
BINARIES=("$@")
[ "${#BINARIES[@]}" -gt 0 ] || BINARIES=(.build/release/insight-sidecar)
for tool in nghttpd h2load taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nghttp2-server nghttp2-client util-linux)"; exit 1; }
done
source Benchmarks/origin.sh
start_origin chain 0

# outer_cpu BINARY [FLAGS...]: one run, prints the outer sidecar's CPU µs per request
outer_cpu() {
    local bin="$1"
    shift
    local inner inner_admin outer outer_admin inner_pid outer_pid before after
    inner=$(free_port); inner_admin=$(free_port); outer=$(free_port); outer_admin=$(free_port)
    taskset -c 0 "$bin" run --listen "127.0.0.1:$inner" --upstream "127.0.0.1:$ORIGIN" --hop inner --region r2 \
        --admin "127.0.0.1:$inner_admin" --event-loops 1 --log-level error >"$TMP/inner.log" 2>&1 &
    inner_pid=$!
    taskset -c 1 "$bin" run --listen "127.0.0.1:$outer" --upstream "127.0.0.1:$inner" --hop outer --region r1 \
        --admin "127.0.0.1:$outer_admin" --event-loops 1 --log-level error "$@" >"$TMP/outer.log" 2>&1 &
    outer_pid=$!
    wait_port "$inner"
    wait_port "$outer"
    taskset -c 0 h2load -n 10000 -c4 -m10 -t1 -H 'te: trailers' "http://127.0.0.1:$outer/small" >/dev/null
    before=$(sed 's/.*) //' "/proc/$outer_pid/stat" | awk '{print $12 + $13}')
    taskset -c 0 h2load -n "$N" -c4 -m10 -t1 -H 'te: trailers' "http://127.0.0.1:$outer/small" >"$TMP/h2load.log"
    after=$(sed 's/.*) //' "/proc/$outer_pid/stat" | awk '{print $12 + $13}')
    kill "$outer_pid" "$inner_pid"
    wait "$outer_pid" "$inner_pid" 2>/dev/null || true
    grep -q " 0 failed, 0 errored" "$TMP/h2load.log" || { echo "h2load reported failures" >&2; cat "$TMP/h2load.log" >&2; exit 1; }
    python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / $N, 2))"
}

declare -A RESULTS
for rep in $(seq "$REPS"); do
    for bin in "${BINARIES[@]}"; do
        for mode in timing bare; do
            flags=()
            [ "$mode" = bare ] && flags=(--no-timing)
            v=$(outer_cpu "$bin" "${flags[@]}")
            echo "rep $rep $bin $mode: $v µs/req"
            RESULTS["$bin $mode"]+="$v "
        done
    done
done
echo
printf '%-50s %-7s %s\n' binary mode "outer CPU µs/req (median)"
for bin in "${BINARIES[@]}"; do
    for mode in timing bare; do
        printf '%-50s %-7s %s\n' "$bin" "$mode" \
            "$(python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" ${RESULTS["$bin $mode"]})"
    done
done
