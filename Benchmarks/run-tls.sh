#!/usr/bin/env bash
# TLS comparison: h2load over TLS (h2 via ALPN) -> {insight-sidecar, nghttpx, HAProxy} -> nghttpd (h2c).
# Each proxy terminates TLS with the same self-signed ECDSA P-256 certificate, one worker/thread/event
# loop pinned to CPU 1; h2load and the origin on CPU 0. New connections per run, so every run includes
# the handshakes (4 for small requests, 1 for bulk). Prints req/s and MB/s with ratios to HAProxy.
# Usage: Benchmarks/run-tls.sh [SECONDS]   (needs a release build: swift build -c release)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-5}"
BIN="${INSIGHT_SIDECAR:-.build/release/insight-sidecar}"
TMP="$(mktemp -d /tmp/insight-bench-tls.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }

mkdir -p "$TMP/docroot"
head -c 100 /dev/urandom >"$TMP/docroot/small"
head -c 10485760 /dev/urandom >"$TMP/docroot/bulk"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

ORIGIN=$(free_port); SIDECAR=$(free_port); ADMIN=$(free_port); NGHTTPX=$(free_port); HAPROXY=$(free_port)
taskset -c 0 nghttpd --no-tls -d "$TMP/docroot" "$ORIGIN" >/dev/null 2>&1 & PIDS+=($!)
cat >"$TMP/sidecar.yaml" <<YAML
listen: 127.0.0.1:$SIDECAR
upstream: 127.0.0.1:$ORIGIN
hop: bench
region: local
admin: 127.0.0.1:$ADMIN
event_loops: 1
tls: {cert: $TMP/cert.pem, key: $TMP/key.pem}
YAML
taskset -c 1 "$BIN" run --config "$TMP/sidecar.yaml" >"$TMP/sidecar.log" 2>&1 & PIDS+=($!)
taskset -c 1 nghttpx --conf=/dev/null --workers=1 --frontend="127.0.0.1,$NGHTTPX" \
  --backend="127.0.0.1,$ORIGIN;;proto=h2" --accesslog-file=/dev/null --errorlog-file="$TMP/nghttpx.log" \
  "$TMP/key.pem" "$TMP/cert.pem" & PIDS+=($!)
cat >"$TMP/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$HAPROXY ssl crt $TMP/combined.pem alpn h2
  default_backend b
backend b
  server s1 127.0.0.1:$ORIGIN proto h2
CFG
taskset -c 1 haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 & PIDS+=($!)
for p in $ORIGIN $SIDECAR $NGHTTPX $HAPROXY; do wait_port "$p"; done

declare -A SMALL BULK
for name in insight-sidecar nghttpx haproxy; do
  case $name in insight-sidecar) port=$SIDECAR ;; nghttpx) port=$NGHTTPX ;; haproxy) port=$HAPROXY ;; esac
  taskset -c 0 h2load -c4 -m10 --warm-up-time=1 -D "$DURATION" "https://127.0.0.1:$port/small" >"$TMP/$name-small.txt"
  taskset -c 0 h2load -c1 -m1 -n 20 "https://127.0.0.1:$port/bulk" >"$TMP/$name-bulk.txt"
  for t in small bulk; do
    grep -q " 0 failed, 0 errored, 0 timeout" "$TMP/$name-$t.txt" || { echo "$name $t: failed requests"; cat "$TMP/$name-$t.txt"; exit 1; }
  done
  SMALL[$name]=$(awk '/^finished in/ {gsub(",","",$4); print $4}' "$TMP/$name-small.txt")
  secs=$(python3 Benchmarks/parse_h2load.py parse "$TMP/$name-bulk.txt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["finished_s"])')
  BULK[$name]=$(python3 -c "print(round(20*10485760/$secs/1e6))")
done
printf '%-16s %12s %10s %10s %10s\n' target "small req/s" "vs HAProxy" "bulk MB/s" "vs HAProxy"
for name in insight-sidecar nghttpx haproxy; do
  printf '%-16s %12s %10s %10s %10s\n' "$name" "${SMALL[$name]}" \
    "$(python3 -c "print(f'{${SMALL[$name]}/${SMALL[haproxy]}:.2f}x')")" "${BULK[$name]}" \
    "$(python3 -c "print(f'{${BULK[$name]}/${BULK[haproxy]}:.2f}x')")"
done
