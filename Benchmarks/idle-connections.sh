#!/usr/bin/env bash
# Memory per idle client connection: insight-sidecar against nghttpx and HAProxy.
#
#   Benchmarks/idle-connections.sh [--keep-tmp]
#
# Every proxy runs with one event loop / worker / thread on CPU $PROXY_CPU in front of one
# nghttpd origin (h2c), and each must first serve two small requests and one bulk request
# (the smoke test of lib.sh), so that start-up and first-request allocations are done before
# the count starts. Then, one proxy at a time, a raw-socket client opens N connections that
# each send the HTTP/2 preface and an empty SETTINGS frame, read the proxy's SETTINGS, ACK
# it, and then stay idle. The proxy's RSS (VmRSS summed over its process tree, so nghttpx's
# worker counts) is read before the first connection and again SETTLE seconds after the last
# one is set up:
#
#   KiB per connection = (RSS with N idle connections - RSS before) / N
#
# The ratio columns divide by HAProxy's and nghttpx's figures from the same run.
# RSS includes what the allocator keeps around, which is what an operator pays for; the
# heap alone (what was asked of malloc) is HEAPTRACK=1's figure below.
#
# HEAPTRACK=1 adds, for each insight binary, two more runs under heaptrack (the sidecar's
# RSS is meaningless there): one with N idle connections and one with none. Heap per
# connection = (peak heap with N - peak heap with none) / N, and the call sites holding the
# most memory at the peak (heaptrack_print --print-peaks, the N-connection run) go to
# $TMP/heaptrack-TARGET.txt (keep it with --keep-tmp).
#
# Env: N=2000 SETTLE=2 PROXY_CPU=1 LOAD_CPU=0 HEAPTRACK=0
#      INSIGHT_SIDECAR (default .build/release/insight-sidecar)
#      BASELINE_SIDECAR=<path>  (optional second binary, run as "insight-baseline" with the
#                                same flags, for a before/after comparison in one run)
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PARSER="$SCRIPT_DIR/parse_h2load.py"
N="${N:-2000}"
SETTLE="${SETTLE:-2}"
PROXY_CPU="${PROXY_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
HEAPTRACK="${HEAPTRACK:-0}"
INSIGHT_SIDECAR="${INSIGHT_SIDECAR:-.build/release/insight-sidecar}"
BASELINE_SIDECAR="${BASELINE_SIDECAR:-}"
KEEP_TMP=0
SMALL_BYTES=100
BULK_BYTES=$((1024 * 1024))

while [[ $# -gt 0 ]]; do
  case "$1" in
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=Benchmarks/lib.sh
source "$SCRIPT_DIR/lib.sh"

for tool in h2load nghttpd nghttpx haproxy taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install -y nghttp2-client nghttp2-server nghttp2-proxy haproxy util-linux python3)"
done
if (( HEAPTRACK )); then
  command -v heaptrack >/dev/null 2>&1 && command -v heaptrack_print >/dev/null 2>&1 ||
    die "HEAPTRACK=1 needs heaptrack (apt-get install -y heaptrack)"
fi
(( $(nproc) < 2 )) && { LOAD_CPU=0; PROXY_CPU=0; }

# Every proxy and the client hold N descriptors at once (nghttpx two per connection at most).
want_fds=$((2 * N + 1024))
if (( $(ulimit -n) < want_fds )); then
  ulimit -Hn "$want_fds" 2>/dev/null || true
  ulimit -n "$want_fds" 2>/dev/null || die "cannot raise ulimit -n to $want_fds (hard limit $(ulimit -Hn))"
fi

TMP="$(mktemp -d /tmp/insight-idle.XXXXXX)"
mkdir -p "$TMP/docroot"
PIDS=()
NAMES=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$REPO_ROOT" || die "cannot cd to $REPO_ROOT"

abs() { [[ "$1" = /* ]] && echo "$1" || echo "$REPO_ROOT/$1"; }
SIDECAR_BIN="$(abs "$INSIGHT_SIDECAR")"
[[ -x "$SIDECAR_BIN" ]] || die "no sidecar binary at $SIDECAR_BIN (swift build -c release --product insight-sidecar)"
declare -A BIN=([insight-sidecar]="$SIDECAR_BIN")
INSIGHT_TARGETS=(insight-sidecar)
if [[ -n "$BASELINE_SIDECAR" ]]; then
  BIN[insight-baseline]="$(abs "$BASELINE_SIDECAR")"
  [[ -x "${BIN[insight-baseline]}" ]] || die "no BASELINE_SIDECAR binary at ${BIN[insight-baseline]}"
  INSIGHT_TARGETS+=(insight-baseline)
fi

head -c "$SMALL_BYTES" /dev/urandom >"$TMP/docroot/small"
head -c "$BULK_BYTES" /dev/urandom >"$TMP/docroot/bulk"

# The idle client: N connections, each prefaced, SETTINGS exchanged both ways, then silent
# until SIGTERM. Writes "ready" to READY_FILE once every connection is set up; exits 1 if a
# connection fails or is closed by the proxy.
cat >"$TMP/idle_client.py" <<'EOF'
import selectors, signal, socket, sys, time
port, n, ready_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_ACK = bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])
sel = selectors.DefaultSelector()
state = {}  # socket -> [received bytes, saw the proxy's SETTINGS, saw the ACK of ours]
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(PREFACE)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    state[s] = [bytearray(), False, False]
    socks.append(s)
pending, deadline = n, time.monotonic() + 60
while pending and time.monotonic() < deadline:
    for key, _ in sel.select(1.0):
        s = key.fileobj
        data = s.recv(65536)
        if not data:
            sys.exit(f"idle client: the proxy closed a connection during set-up ({n - pending} of {n} done)")
        st = state[s]
        st[0] += data
        buf = st[0]
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[0:3], "big"):
            length, ftype, flags = int.from_bytes(buf[0:3], "big"), buf[3], buf[4]
            if ftype == 4 and flags & 1:
                st[2] = True
            elif ftype == 4:
                st[1] = True
                s.sendall(SETTINGS_ACK)
            del buf[:9 + length]
        if st[1] and st[2]:
            sel.unregister(s)
            pending -= 1
if pending:
    sys.exit(f"idle client: {pending} of {n} connections got no SETTINGS exchange within 60 s")
open(ready_file, "w").write("ready\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
EOF

# tree_rss_kib PID -> VmRSS (KiB) of PID and all its descendants, summed
tree_rss_kib() {
  python3 - "$1" <<'EOF'
import os, sys
root, parent = int(sys.argv[1]), {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass
def under(p):
    while p > 1:
        if p == root:
            return True
        p = parent.get(p, 0)
    return False
total = 0
for p in parent:
    if under(p):
        try:
            total += next(int(l.split()[1]) for l in open(f"/proc/{p}/status") if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
print(total)
EOF
}

# open_idle PORT -> starts the idle client against PORT, waits for "ready"; sets CLIENT_PID
open_idle() {
  local port="$1" ready="$TMP/ready.$1" i
  rm -f "$ready"
  taskset -c "$LOAD_CPU" python3 "$TMP/idle_client.py" "$port" "$N" "$ready" >"$TMP/client.$port.log" 2>&1 &
  CLIENT_PID=$!
  for ((i = 0; i < 1200; i++)); do
    [[ -s "$ready" ]] && return 0
    kill -0 "$CLIENT_PID" 2>/dev/null || { log "idle client failed: $(tail -n 3 "$TMP/client.$port.log")"; return 1; }
    sleep 0.1
  done
  log "idle client did not finish setting up $N connections in 120 s"
  return 1
}

close_idle() {
  kill -TERM "$CLIENT_PID" 2>/dev/null
  wait "$CLIENT_PID" 2>/dev/null
  return 0
}

read -r ORIGIN_PORT NGHTTPX_PORT HAPROXY_PORT <<<"$(free_ports 3)"
start_bg origin "$LOAD_CPU" nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN_PORT"
wait_port origin "$LAST_PID" "$ORIGIN_PORT" && smoke origin "$ORIGIN_PORT" || die "origin (nghttpd) did not come up"

declare -A PORT TPID
TARGETS=()

# sidecar_args PORT ADMIN -> the run flags shared by every insight target
sidecar_args() {
  echo run --listen "127.0.0.1:$1" --upstream "127.0.0.1:$ORIGIN_PORT" --hop bench --region local \
    --admin "127.0.0.1:$2" --event-loops 1 --log-level error
}

for t in "${INSIGHT_TARGETS[@]}"; do
  read -r port admin <<<"$(free_ports 2)"
  # shellcheck disable=SC2046
  start_bg "$t" "$PROXY_CPU" "${BIN[$t]}" $(sidecar_args "$port" "$admin")
  if wait_port "$t" "$LAST_PID" "$port" 15 && smoke "$t" "$port"; then
    PORT[$t]=$port; TPID[$t]=$LAST_PID; TARGETS+=("$t")
  else
    log "$t skipped"
  fi
done

start_bg nghttpx "$PROXY_CPU" nghttpx --conf=/dev/null \
  --frontend="127.0.0.1,$NGHTTPX_PORT;no-tls" --backend="127.0.0.1,$ORIGIN_PORT;;proto=h2" \
  --workers=1 --no-ocsp --log-level=WARN --errorlog-file="$TMP/nghttpx-error.log"
if wait_port nghttpx "$LAST_PID" "$NGHTTPX_PORT" && smoke nghttpx "$NGHTTPX_PORT"; then
  PORT[nghttpx]=$NGHTTPX_PORT; TPID[nghttpx]=$LAST_PID; TARGETS+=(nghttpx)
fi

write_haproxy_cfg "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$ORIGIN_PORT" "proto h2" "$((N + 1000))"
start_bg haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
if wait_port haproxy "$LAST_PID" "$HAPROXY_PORT" && smoke haproxy "$HAPROXY_PORT"; then
  PORT[haproxy]=$HAPROXY_PORT; TPID[haproxy]=$LAST_PID; TARGETS+=(haproxy)
fi

log "N=$N idle connections per proxy, settle ${SETTLE}s; targets: ${TARGETS[*]}"
declare -A BEFORE AFTER PERCONN
for t in "${TARGETS[@]}"; do
  BEFORE[$t]="$(tree_rss_kib "${TPID[$t]}")"
  if open_idle "${PORT[$t]}"; then
    sleep "$SETTLE"
    AFTER[$t]="$(tree_rss_kib "${TPID[$t]}")"
    PERCONN[$t]="$(python3 -c "print(f'{(${AFTER[$t]} - ${BEFORE[$t]}) / $N:.1f}')")"
    log "$t: RSS ${BEFORE[$t]} KiB -> ${AFTER[$t]} KiB = ${PERCONN[$t]} KiB per connection"
  else
    log "$t: FAILED (no figure)"
  fi
  close_idle
done

ratio() {  # ratio A B -> A/B with 2 decimals, or - if either is missing
  [[ -n "$1" && -n "$2" ]] && python3 -c "print(f'{$1 / $2:.2f}x' if $2 > 0 else '-')" || echo -
}
echo
printf '%-18s %14s %14s %12s %11s %11s\n' proxy "RSS before KiB" "RSS after KiB" "KiB/conn" "vs HAProxy" "vs nghttpx"
for t in "${TARGETS[@]}"; do
  printf '%-18s %14s %14s %12s %11s %11s\n' "$t" "${BEFORE[$t]}" "${AFTER[$t]:--}" "${PERCONN[$t]:--}" \
    "$(ratio "${PERCONN[$t]:-}" "${PERCONN[haproxy]:-}")" "$(ratio "${PERCONN[$t]:-}" "${PERCONN[nghttpx]:-}")"
done

(( HEAPTRACK )) || exit 0

# heap_peak TARGET CONNECTIONS -> peak heap (bytes) of a run with CONNECTIONS idle connections
heap_peak() {
  local t="$1" conns="$2" port admin out pid file
  read -r port admin <<<"$(free_ports 2)"
  out="$TMP/heaptrack.$t.$conns"
  # shellcheck disable=SC2046
  taskset -c "$PROXY_CPU" heaptrack -o "$out" "${BIN[$t]}" $(sidecar_args "$port" "$admin") >"$TMP/heaptrack-run.$t.$conns.log" 2>&1 &
  pid=$!
  wait_port "heaptrack.$t" "$pid" "$port" 30 && smoke "heaptrack.$t" "$port" >/dev/null || return 1
  if (( conns > 0 )); then
    local saved="$N"; N="$conns"
    open_idle "$port" || { N="$saved"; return 1; }
    N="$saved"
    sleep "$SETTLE"
  fi
  # $pid is heaptrack's wrapper: stop the sidecar itself, then let heaptrack write its file.
  pkill -INT -f -- "run --listen 127.0.0.1:$port " || true
  wait "$pid" 2>/dev/null
  (( conns > 0 )) && close_idle
  file="$(ls "$out".* | head -1)"
  if (( conns > 0 )); then
    heaptrack_print -f "$file" --print-peaks -n 20 -s 3 >"$TMP/heaptrack-$t.txt" 2>/dev/null
  fi
  heaptrack_print -f "$file" 2>/dev/null | sed -n 's/^peak heap memory consumption: *\([0-9.]*\)\([KMG]*\).*/\1 \2/p' |
    awk '{m = ($2 == "K") ? 1e3 : ($2 == "M") ? 1e6 : ($2 == "G") ? 1e9 : 1; printf "%d\n", $1 * m}'
}

echo
printf '%-18s %16s %16s %16s\n' binary "peak heap, none" "peak heap, N" "heap KiB/conn"
for t in "${INSIGHT_TARGETS[@]}"; do
  none="$(heap_peak "$t" 0)"; full="$(heap_peak "$t" "$N")"
  per="$( [[ -n "$none" && -n "$full" ]] && python3 -c "print(f'{($full - $none) / $N / 1024:.1f}')" || echo -)"
  printf '%-18s %16s %16s %16s\n' "$t" "${none:--}" "${full:--}" "$per"
done
log "peak consumers by call site: $TMP/heaptrack-*.txt (kept with --keep-tmp)"
