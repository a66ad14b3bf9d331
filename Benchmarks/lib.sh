# Shell helpers shared by the benchmark scripts (run.sh, run-tls.sh, tracing.sh): logging, background
# processes pinned with taskset and killed on exit, loopback ports, smoke tests, machine
# quietness, the CPU time of a process tree from /proc and an h2load run with that CPU time around it.
#
# The sourcing script sets TMP (a temp dir; process logs go to $TMP/NAME.log), PIDS=() and
# NAMES=(), KEEP_TMP, LOAD_CPU, PARSER, SMALL_BYTES and BULK_BYTES, and installs
#   trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "FATAL: $*"; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  for i in "${!PIDS[@]}"; do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  for _ in $(seq 20); do
    local alive=0
    for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for i in "${!PIDS[@]}"; do
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      log "killing ${NAMES[$i]} (pid ${PIDS[$i]}) with SIGKILL"
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null
  if (( KEEP_TMP )); then log "kept temp dir $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}

# write_haproxy_cfg FILE PORT ORIGIN_PORT BIND_OPTIONS [MAXCONN] [GLOBAL_LINE]: HAProxy as every
# benchmark runs it: mode http, one thread, no logging, listening on 127.0.0.1:PORT with
# BIND_OPTIONS (`proto h2` for h2c, `ssl crt PEM alpn h2` for TLS), h2c to the origin.
write_haproxy_cfg() {
  local file="$1" port="$2" origin="$3" bind="$4" maxconn="${5:-1000}" extra="${6:-}"
  cat >"$file" <<EOF
global
    nbthread 1
    maxconn $maxconn
${extra:+    $extra}
defaults
    mode http
    maxconn $maxconn
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:$port $bind
    default_backend be
backend be
    server s1 127.0.0.1:$origin proto h2
EOF
}

# start_bg NAME CPU CMD... : start pinned, in background, log to $TMP/NAME.log; sets LAST_PID
start_bg() {
  local name="$1" cpu="$2"; shift 2
  taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID"); NAMES+=("$name")
}

# wait_port NAME PID PORT [TIMEOUT_S]: wait until 127.0.0.1:PORT accepts while PID is alive
wait_port() {
  local name="$1" pid="$2" port="$3" timeout="${4:-10}" i
  for ((i = 0; i < timeout * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during startup; last log lines:"; tail -n 15 "$TMP/$name.log" | sed 's/^/    /'
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not open port $port within ${timeout}s; last log lines:"; tail -n 15 "$TMP/$name.log" | sed 's/^/    /'
  return 1
}

# smoke NAME PORT: two requests for /small and one for /bulk must succeed with the right body size
# (over TLS when the caller sets SMOKE_SCHEME=https)
smoke() {
  local name="$1" port="$2" f="$TMP/smoke-$1.txt" scheme="${SMOKE_SCHEME:-http}"
  if timeout 20 taskset -c "$LOAD_CPU" h2load -c1 -m1 -n2 "$scheme://127.0.0.1:$port/small" >"$f" 2>&1 &&
     python3 "$PARSER" check "$f" "$SMALL_BYTES" 2>>"$f" &&
     timeout 20 taskset -c "$LOAD_CPU" h2load -c1 -m1 -n1 "$scheme://127.0.0.1:$port/bulk" >"$f.bulk" 2>&1 &&
     python3 "$PARSER" check "$f.bulk" "$BULK_BYTES" 2>>"$f"; then
    return 0
  fi
  log "$name smoke test failed:"; tail -n 8 "$f" | sed 's/^/    /'
  return 1
}

cpu_busy_pct() {  # system-wide non-idle CPU % over 1 s (all cores)
  python3 - <<'EOF'
import time
def snap():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3] + f[4]          # total, idle + iowait
t0, i0 = snap(); time.sleep(1); t1, i1 = snap()
print(int(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0)))))
EOF
}

# wait_quiet MAX_S: wait (up to MAX_S) until background CPU use is < 10%; sets QUIET_NOTE
wait_quiet() {
  local max="$1" busy i
  QUIET_NOTE=""
  for ((i = 0; i < max; i++)); do
    busy="$(cpu_busy_pct)"
    (( busy < 10 )) && return 0
    (( i == 0 )) && log "machine is busy (${busy}% CPU used by other processes), waiting up to ${max}s for it to settle..."
  done
  QUIET_NOTE="background CPU load was ${busy}% when measurements started - results are unreliable"
  log "WARNING: $QUIET_NOTE"
}

free_ports() {  # free_ports N -> N distinct currently-free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
EOF
}

# proc_tree_cpu PID -> "TICKS NS": CPU time of PID and all its live descendants (nghttpx runs a
# worker process under its master), summed; prints nothing if PID is gone.
#   TICKS: utime+stime+cutime+cstime from /proc/P/stat, in clock ticks (CLK_TCK, usually 100/s).
#          The stat of a thread-group leader covers all its threads, exited ones included;
#          cutime/cstime keep the time of reaped children.
#   NS:    the same CPU time in ns from /proc/P/task/*/schedstat (sum_exec_runtime of every live
#          thread), or "-" if schedstat is not available.  The report uses it instead of TICKS
#          (10 ms steps: a bulk run can be as little as 10 ticks) when the two deltas agree to
#          within 3 ticks, i.e. when no thread or child exited in between.
# The tree is found through the ppid field of every process (no reliance on
# /proc/P/task/*/children, which needs CONFIG_PROC_CHILDREN).
proc_tree_cpu() {
  local root="$1" f line pid p total=0 found=0 ns=0 sched=1 t
  local -a fl
  local -A parent=() ticks=()
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    pid="${line%% *}"
    read -ra fl <<<"${line##*) }"          # fl[0] = state (field 3), fl[1] = ppid, fl[11..14] = u/s/cu/cs time
    parent[$pid]="${fl[1]}"
    ticks[$pid]=$((fl[11] + fl[12] + fl[13] + fl[14]))
  done
  for pid in "${!ticks[@]}"; do
    p="$pid"
    while [[ -n "$p" ]]; do
      if [[ "$p" == "$root" ]]; then
        total=$((total + ticks[$pid])); [[ "$pid" == "$root" ]] && found=1
        for f in /proc/"$pid"/task/*/schedstat; do
          if read -r t _ 2>/dev/null <"$f"; then ns=$((ns + t)); else sched=0; fi
        done
        break
      fi
      [[ "$p" == 0 || "$p" == 1 ]] && break
      p="${parent[$p]:-}"
    done
  done
  (( sched )) || ns="-"
  (( found )) && echo "$total $ns"
}

# h2load_cpu OUT PID ARGS...: `h2load ARGS` pinned to $LOAD_CPU (capped at 60 s) into OUT.txt, and
# the CPU time of PID's process tree around it into OUT.cpu as
# "TICKS_BEFORE TICKS_AFTER CLK_TCK NS_BEFORE NS_AFTER" (what parse_h2load.py's cpu_seconds reads).
# No OUT.cpu when PID is empty (no proxy) or the process died during the run.
h2load_cpu() {
  local out="$1" pid="$2" before="" after="" rc; shift 2
  [[ -n "$pid" ]] && before="$(proc_tree_cpu "$pid")"
  timeout 60 taskset -c "$LOAD_CPU" h2load "$@" >"$out.txt" 2>&1
  rc=$?
  (( rc == 0 )) || echo "h2load exit status $rc" >>"$out.txt"
  [[ -n "$before" ]] && after="$(proc_tree_cpu "$pid")"
  if [[ -n "$after" ]]; then
    printf '%s %s %s %s %s\n' "${before% *}" "${after% *}" "${CLK_TCK:-$(getconf CLK_TCK)}" "${before#* }" "${after#* }" \
      >"$out.cpu"
  fi
  return 0
}

# describe_bin PATH: "PATH (git REV, built DATE)" with REV = HEAD of the git tree the binary lives in
describe_bin() {
  local bin="$1"
  printf '%s (git %s, built %s)' "${bin#$REPO_ROOT/}" \
    "$(git -C "$(dirname "$bin")" rev-parse --short HEAD 2>/dev/null || echo 'no commit')" \
    "$(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC')"
}
