#!/usr/bin/env bash
# Swift runtime calls per proxied request, counted exactly with uprobes (`perf probe` + `perf stat`)
# on a release binary: reference counting (swift_retain / swift_release and their _n and
# bridgeObject forms), exclusivity checks (swift_beginAccess), object allocations
# (swift_allocObject) and malloc.
#
#   Benchmarks/runtime-calls.sh [BINARY...]     (default .build/release/insight-sidecar)
#
# callgrind would count instructions, but valgrind 3.19 crashes on the Swift binary here; these
# counts stand in for it: like instructions they repeat exactly between runs on a noisy machine
# (retain/release alone were ~20 % of the sidecar's CPU under small-request load, all in atomic
# instructions), where req/s and even CPU time move. Each uprobe hit costs microseconds, so the
# run is slow and its timing means nothing; only the counts are read.
#
# For each binary: nghttpd serves a 100-byte file; the sidecar (one event loop, timing on, and
# again with --no-timing) gets WARMUP requests, then N more (h2load -c4 -m10) while `perf stat`
# counts the probes on its process. Needs root (uprobes); adds the probes once (`perf probe -d
# 'probe_libswiftCore:*'` removes them).
#
# Env: N=20000 WARMUP=5000
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-20000}"
WARMUP="${WARMUP:-5000}"
BINARIES=("$@")
[ "${#BINARIES[@]}" -gt 0 ] || BINARIES=(.build/release/insight-sidecar)
for tool in perf nghttpd h2load; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y linux-perf nghttp2-server nghttp2-client)"; exit 1; }
done

FUNCTIONS=(swift_retain swift_release swift_retain_n swift_release_n swift_bridgeObjectRetain
    swift_bridgeObjectRelease swift_beginAccess swift_allocObject)
LIBSWIFT=$(ldd "${BINARIES[0]}" | awk '/libswiftCore.so/ {print $3}')
LIBC=$(ldd "${BINARIES[0]}" | awk '/libc.so.6/ {print $3}')
[ -n "$LIBSWIFT" ] || { echo "${BINARIES[0]} does not link libswiftCore.so dynamically"; exit 1; }
existing=$(perf probe -l 2>/dev/null || true)
for f in "${FUNCTIONS[@]}"; do
    grep -q "probe_libswiftCore:$f " <<<"$existing" || perf probe -q -x "$LIBSWIFT" "$f"
done
grep -q "probe_libc:malloc " <<<"$existing" || perf probe -q -x "$LIBC" malloc
EVENTS=$(printf 'probe_libswiftCore:%s,' "${FUNCTIONS[@]}")probe_libc:malloc

source Benchmarks/origin.sh
start_origin rtcalls

# counts BINARY FLAGS... -> "function count" lines for N requests after the warm-up
counts() {
    local bin="$1"
    shift
    local port admin
    port=$(free_port)
    admin=$(free_port)
    "$bin" run --listen "127.0.0.1:$port" --upstream "127.0.0.1:$ORIGIN" --hop bench --region local \
        --admin "127.0.0.1:$admin" --event-loops 1 --log-level error "$@" >"$TMP/sidecar.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    h2load -n "$WARMUP" -c4 -m10 -t1 "http://127.0.0.1:$port/small" >/dev/null
    perf stat -x, -e "$EVENTS" -p "$pid" -o "$TMP/stat" &
    local stat=$!
    sleep 0.5
    h2load -n "$N" -c4 -m10 -t1 "http://127.0.0.1:$port/small" >"$TMP/h2load.log"
    grep -q " 0 failed, 0 errored" "$TMP/h2load.log" || { cat "$TMP/h2load.log"; exit 1; }
    kill -INT "$stat"
    wait "$stat" 2>/dev/null || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -F, '/probe_/ {split($3, a, ":"); print a[2], $1}' "$TMP/stat"
}

printf '%-40s %-7s' binary mode
for f in retain release bridge_rel access allocObj malloc; do printf ' %9s' "$f"; done
printf '   (per request)\n'
for bin in "${BINARIES[@]}"; do
    for mode in timing bare; do
        flags=()
        [ "$mode" = bare ] && flags=(--no-timing)
        counts "$bin" "${flags[@]}" >"$TMP/counts"
        python3 - "$TMP/counts" "$N" "$bin" "$mode" <<'EOF'
import sys
c = {}
for line in open(sys.argv[1]):
    name, n = line.split()
    c[name] = int(n)
n = int(sys.argv[2])
row = [
    c["swift_retain"] + c["swift_retain_n"] + c["swift_bridgeObjectRetain"],
    c["swift_release"] + c["swift_release_n"],
    c["swift_bridgeObjectRelease"],
    c["swift_beginAccess"],
    c["swift_allocObject"],
    c["malloc"],
]
print(f"{sys.argv[3][-40:]:40s} {sys.argv[4]:7s}" + "".join(f" {x / n:9.1f}" for x in row))
EOF
    done
done
