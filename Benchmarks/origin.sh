# Sourced by the scripts that measure one sidecar alone (alloc-per-request.sh, runtime-calls.sh,
# profile.sh): a temp dir removed on exit, loopback port helpers, and an nghttpd origin serving
# the 100-byte `small` file.
#
#   start_origin NAME [TASKSET_CPU]   sets TMP (mktemp -d /tmp/insight-NAME.XXXXXX) and ORIGIN
#                                     (the origin's port), and waits until it listens

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

start_origin() {
    local name="$1" cpu="${2:-}"
    TMP="$(mktemp -d "/tmp/insight-$name.XXXXXX")"
    trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
    mkdir -p "$TMP/docroot"
    head -c 100 /dev/zero | tr '\0' 'x' >"$TMP/docroot/small"
    ORIGIN=$(free_port)
    if [ -n "$cpu" ]; then
        taskset -c "$cpu" nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN" >/dev/null 2>&1 &
    else
        nghttpd --no-tls -a 127.0.0.1 -n 1 -d "$TMP/docroot" "$ORIGIN" >/dev/null 2>&1 &
    fi
    wait_port "$ORIGIN"
}
