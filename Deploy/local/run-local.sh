#!/usr/bin/env bash
# `make run`: the sidecar in front of a small gRPC test backend, on loopback.
# (The two-region embedded demo replaces this once `insight-sidecar demo` exists.)
set -euo pipefail
BIN=${1:-.build/debug/insight-sidecar}
BACKEND_PORT=${BACKEND_PORT:-50051}
LISTEN_PORT=${LISTEN_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9901}
PYTHON=${PYTHON:-python3}

cleanup() { [ -n "${BACKEND_PID:-}" ] && kill "$BACKEND_PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$PYTHON" Tests/e2e/grpc_server.py --port "$BACKEND_PORT" &
BACKEND_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$BACKEND_PORT) 2>/dev/null && break; sleep 0.1; done

cat <<MSG

  Insight sidecar on 127.0.0.1:$LISTEN_PORT (h2c) -> gRPC test backend on 127.0.0.1:$BACKEND_PORT
  Admin: http://127.0.0.1:$ADMIN_PORT/metrics  /healthz  /readyz

  Try, in another terminal:
    h2load -n 10000 -c 4 -m 10 http://127.0.0.1:$LISTEN_PORT/
    curl -s http://127.0.0.1:$ADMIN_PORT/metrics | grep insight_streams_total
    python3 -c "import grpc; ch=grpc.insecure_channel('127.0.0.1:$LISTEN_PORT'); \\
      print(ch.unary_unary('/insight.test.v1.Test/Unary')(b'hello', metadata=[('x-echo-who','me')]))"

  Ctrl-C stops both (the sidecar drains in-flight streams first).

MSG
"$BIN" run --listen 127.0.0.1:$LISTEN_PORT --upstream 127.0.0.1:$BACKEND_PORT \
    --hop local-backend --region local --admin 127.0.0.1:$ADMIN_PORT --drain-timeout 5s
