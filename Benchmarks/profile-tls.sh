#!/usr/bin/env bash
# CPU per request and a `perf` profile of one TLS-terminating proxy under small-request load:
# Benchmarks/profile.sh over TLS.
#
#   Benchmarks/profile-tls.sh TARGET OUT_PREFIX
#
# TARGET is an insight-sidecar binary, or `haproxy` or `nghttpx` (configured as in run-tls.sh).
# nghttpd (h2c, CPU 0) serves a 100-byte file; the proxy terminates TLS (ECDSA P-256, ALPN h2,
# one event loop / thread / worker, CPU 1); h2load (CPU 0) sends 20,000 warm-up requests, then N
# (default 200,000, -c4 -m10, 4 handshakes) while `perf record -g` (cpu-clock) samples the proxy
# for 3 s and `strace -c` is off. Prints the proxy's CPU µs per request over the N requests
# (utime + stime from /proc, perf's overhead included: compare targets back to back) and the
# socket writes per request from /proc/PID/io (syscw), each of which carries at least one record.
# Read the profile with: perf report -i OUT_PREFIX.perf --no-children --sort dso,symbol --stdio
# Env: N=200000 PERF=1 (0: no perf, CPU figure without its overhead)
#      TLS=1 (0: the same proxies and load over h2c, to see what TLS adds to each, back to back)
set -euo pipefail
# shellcheck source=Benchmarks/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"  # write_haproxy_cfg
TARGET="$1"; OUT="$2"
N="${N:-200000}"
PERF="${PERF:-1}"
TLS="${TLS:-1}"
TMP="$(mktemp -d /tmp/insight-profile-tls.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
head -c 100 /dev/zero | tr '\0' x >"$TMP/small"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"
SCHEME=https HAPROXY_BIND="ssl crt $TMP/combined.pem alpn h2" NGHTTPX_TLS="" SIDECAR_TLS="tls: {cert: $TMP/cert.pem, key: $TMP/key.pem}"
if [[ "$TLS" == 0 ]]; then SCHEME=http HAPROXY_BIND="proto h2" NGHTTPX_TLS=";no-tls" SIDECAR_TLS=""; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
ORIGIN=$(free_port); PORT=$(free_port); ADMIN=$(free_port)
taskset -c 0 nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP" "$ORIGIN" >/dev/null 2>&1 &
case "$TARGET" in
  haproxy)
    write_haproxy_cfg "$TMP/haproxy.cfg" "$PORT" "$ORIGIN" "$HAPROXY_BIND"
    taskset -c 1 haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/proxy.log" 2>&1 &
    ;;
  nghttpx)
    taskset -c 1 nghttpx --conf=/dev/null --workers=1 --frontend="127.0.0.1,$PORT$NGHTTPX_TLS" \
      --backend="127.0.0.1,$ORIGIN;;proto=h2" --no-ocsp --accesslog-file=/dev/null --log-level=WARN \
      "$TMP/key.pem" "$TMP/cert.pem" >"$TMP/proxy.log" 2>&1 &
    ;;
  *)
    cat >"$TMP/sidecar.yaml" <<YAML
listen: 127.0.0.1:$PORT
upstream: 127.0.0.1:$ORIGIN
hop: bench
region: local
admin: 127.0.0.1:$ADMIN
event_loops: 1
log_level: error
$SIDECAR_TLS
YAML
    taskset -c 1 "$TARGET" run --config "$TMP/sidecar.yaml" >"$TMP/proxy.log" 2>&1 &
    ;;
esac
PROXY=$!
wait_port "$PORT"
# nghttpx forks its worker: measure the process tree (the worker is the busy one).
pids() { echo "$PROXY" $(pgrep -P "$PROXY" || true); }
cpu() { local t=0; for p in $(pids); do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done; echo $t; }
syscw() { local t=0; for p in $(pids); do t=$((t + $(awk '/^syscw/ {print $2}' "/proc/$p/io"))); done; echo $t; }
taskset -c 0 h2load -n 20000 -c4 -m10 -t1 "$SCHEME://127.0.0.1:$PORT/small" >/dev/null
before=$(cpu); wbefore=$(syscw)
taskset -c 0 h2load -n "$N" -c4 -m10 -t1 "$SCHEME://127.0.0.1:$PORT/small" >"$TMP/h2load.log" &
LOAD=$!
BUSY=$(for p in $(pids); do echo "$(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') $p"; done | sort -n | tail -1 | cut -d' ' -f2)
if [[ "$PERF" == 1 ]]; then
  perf record -e cpu-clock -g -o "$OUT.perf" -p "$BUSY" -- sleep 3 >/dev/null 2>&1 || true
fi
wait "$LOAD"
after=$(cpu); wafter=$(syscw)
grep -q " 0 failed, 0 errored" "$TMP/h2load.log" || { cat "$TMP/h2load.log"; exit 1; }
echo "cpu us/req: $(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / $N, 2))")"
echo "write syscalls/req: $(python3 -c "print(round(($wafter - $wbefore) / $N, 3))")"
grep -E "finished in" "$TMP/h2load.log"
