#!/usr/bin/env python3
"""gRPC test server for the Insight end-to-end suite.

Uses grpcio *generic* handlers with raw-bytes (de)serializers: no protoc, no
generated code. Service ``insight.test.v1.Test``:

Unary (unary-unary)
    Echoes the request payload, or returns ``x-response-size`` bytes.
    ``x-echo-*`` request metadata is sent back as initial metadata,
    ``x-trail-*`` (including ``*-bin``) as trailing metadata.
    ``x-status-code`` + ``x-status-message`` (percent-encoded UTF-8) or
    ``x-status-message-bin`` (raw UTF-8) abort with that status and message.
    ``x-sleep-ms`` sleeps (cancel-aware) before answering.
ServerStream (unary-stream)
    ``x-count`` responses of ``x-size`` bytes, ``x-interval-ms`` apart.
ClientStream (stream-unary)
    Returns the total number of received bytes as ASCII; the message count is
    returned as trailing metadata ``x-message-count``. ``x-read-delay-ms``
    sleeps (cancel-aware) that long before reading the first message: a
    handler that stalls an upload without reading it.
PingPong (stream-stream)
    Echoes every message as it arrives.
Stats (unary-unary)
    Side channel for tests: request payload is a tag (the ``x-tag`` metadata
    value used by earlier calls); returns JSON counters for that tag:
    ``{"started": {method: n}, "cancelled": {...}, "completed": {...},
    "messages_sent": {...}, "messages_received": {...}}``.
Headers (unary-unary)
    Returns all request metadata as JSON ``[[key, value], ...]`` (used to see
    the ``insight-*`` headers that reach the service).
SetHealth (unary-unary)
    Payload JSON ``{"service": "", "status": "NOT_SERVING", "delay_ms": 0}``
    (each key optional): sets the ``grpc.health.v1`` status of a service and/or
    the delay before every health check is answered. Returns ``{"ok": true}``.
Counts (unary-unary)
    Returns JSON ``{"/full/method": n}``: every RPC this server was asked for,
    including unknown methods (counted by a server interceptor).

``grpc.health.v1.Health`` (grpcio-health-checking, if installed) reports
``""`` and ``insight.test.v1.Test`` SERVING; ``--health-delay-ms N`` makes every
health check wait N ms before answering.

Run standalone: ``python3 grpc_server.py --port N``.
"""

import argparse
import collections
import json
import signal
import sys
import threading
import time
import urllib.parse
from concurrent import futures

import grpc

SERVICE = "insight.test.v1.Test"
MAX_MSG = 64 * 1024 * 1024


def _payload(size: int) -> bytes:
    """Deterministic, non-trivial payload of ``size`` bytes."""
    pattern = bytes(range(256))
    reps, rest = divmod(size, len(pattern))
    return pattern * reps + pattern[:rest]


def _status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


class Stats:
    """Per-tag counters, readable via the Stats RPC."""

    KINDS = ("started", "cancelled", "completed", "messages_sent", "messages_received")

    def __init__(self):
        self._lock = threading.Lock()
        self._data = collections.defaultdict(
            lambda: {k: collections.Counter() for k in self.KINDS}
        )

    def add(self, tag, kind, method, n=1):
        if not tag:
            return
        with self._lock:
            self._data[tag][kind][method] += n

    def snapshot(self, tag):
        with self._lock:
            d = self._data.get(tag)
            if d is None:
                return {k: {} for k in self.KINDS}
            return {k: dict(v) for k, v in d.items()}


STATS = Stats()


class MethodCounter:
    """Every RPC the server sees, by full method name (including unknown ones)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = collections.Counter()

    def add(self, method):
        with self._lock:
            self._counts[method] += 1

    def snapshot(self):
        with self._lock:
            return dict(self._counts)


METHODS = MethodCounter()


class _CountingInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        METHODS.add(handler_call_details.method)
        return continuation(handler_call_details)


# Health state, adjustable at run time through SetHealth.
HEALTH = {"servicer": None, "delay_ms": 0}


class Call:
    """Per-call helper: metadata access plus stats/cancellation tracking."""

    def __init__(self, method, context):
        self.method = method
        self.context = context
        self.md = {}
        for key, value in context.invocation_metadata() or ():
            self.md.setdefault(key, value)
        self.tag = self.md.get("x-tag")
        if isinstance(self.tag, bytes):
            self.tag = self.tag.decode("latin-1")
        STATS.add(self.tag, "started", method)
        context.add_callback(self._on_done)

    def _on_done(self):
        # The callback runs when the RPC terminates. grpcio does not expose
        # "was this cancelled" publicly; its private state records it.
        state = getattr(self.context, "_state", None)
        cancelled = getattr(state, "client", None) == "cancelled"
        STATS.add(self.tag, "cancelled" if cancelled else "completed", self.method)

    def int_md(self, key, default=None):
        value = self.md.get(key)
        if value is None:
            return default
        return int(value)

    def sleep(self, seconds):
        """Sleep, waking early if the RPC is cancelled / past its deadline."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if not self.context.is_active():
                return False
            time.sleep(min(left, 0.02))

    def send_echo_metadata(self):
        initial = [(k, v) for k, v in self.md.items() if k.startswith("x-echo-")]
        trailing = [(k, v) for k, v in self.md.items() if k.startswith("x-trail-")]
        if initial:
            self.context.send_initial_metadata(initial)
        return trailing

    def maybe_abort(self, trailing):
        code = self.int_md("x-status-code")
        if code is None:
            return
        # Non-ASCII messages can't travel in a text header: accept UTF-8 in
        # x-status-message-bin, or percent-encoded UTF-8 in x-status-message.
        if "x-status-message-bin" in self.md:
            message = self.md["x-status-message-bin"].decode("utf-8")
        else:
            message = urllib.parse.unquote(self.md.get("x-status-message", ""))
        if trailing:
            self.context.set_trailing_metadata(trailing)
        self.context.abort(_status_code(code), message)


def unary(request: bytes, context) -> bytes:
    call = Call("Unary", context)
    STATS.add(call.tag, "messages_received", "Unary")
    sleep_ms = call.int_md("x-sleep-ms", 0)
    if sleep_ms and not call.sleep(sleep_ms / 1000.0):
        return b""  # cancelled / deadline passed; nobody is listening
    trailing = call.send_echo_metadata()
    call.maybe_abort(trailing)
    if trailing:
        context.set_trailing_metadata(trailing)
    size = call.int_md("x-response-size")
    STATS.add(call.tag, "messages_sent", "Unary")
    return request if size is None else _payload(size)


def server_stream(request: bytes, context):
    call = Call("ServerStream", context)
    STATS.add(call.tag, "messages_received", "ServerStream")
    count = call.int_md("x-count", 0)
    size = call.int_md("x-size", 0)
    interval = call.int_md("x-interval-ms", 0) / 1000.0
    trailing = call.send_echo_metadata()
    if trailing:
        context.set_trailing_metadata(trailing)
    body = _payload(size)
    for i in range(count):
        if i and interval and not call.sleep(interval):
            return
        if not context.is_active():
            return
        STATS.add(call.tag, "messages_sent", "ServerStream")
        yield body
    call.maybe_abort(trailing)


def client_stream(request_iterator, context) -> bytes:
    call = Call("ClientStream", context)
    trailing = call.send_echo_metadata()
    read_delay_ms = call.int_md("x-read-delay-ms", 0)
    if read_delay_ms and not call.sleep(read_delay_ms / 1000.0):
        return b""  # cancelled / deadline passed before a single read
    total = 0
    count = 0
    for message in request_iterator:
        total += len(message)
        count += 1
        STATS.add(call.tag, "messages_received", "ClientStream")
    call.maybe_abort(trailing)
    context.set_trailing_metadata(tuple(trailing) + (("x-message-count", str(count)),))
    STATS.add(call.tag, "messages_sent", "ClientStream")
    return str(total).encode("ascii")


def ping_pong(request_iterator, context):
    call = Call("PingPong", context)
    trailing = call.send_echo_metadata()
    if trailing:
        context.set_trailing_metadata(trailing)
    for message in request_iterator:
        STATS.add(call.tag, "messages_received", "PingPong")
        STATS.add(call.tag, "messages_sent", "PingPong")
        yield message
    call.maybe_abort(trailing)


def headers(request: bytes, context) -> bytes:
    """All request metadata as a JSON list of [key, value] pairs, in arrival
    order (``-bin`` values are latin-1 decoded)."""
    out = []
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append([key, value])
    return json.dumps(out).encode("utf-8")


def stats(request: bytes, context) -> bytes:
    return json.dumps(STATS.snapshot(request.decode("utf-8"))).encode("utf-8")


def set_health(request: bytes, context) -> bytes:
    req = json.loads(request.decode("utf-8") or "{}")
    if "delay_ms" in req:
        HEALTH["delay_ms"] = int(req["delay_ms"])
    if "status" in req:
        servicer = HEALTH["servicer"]
        if servicer is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "grpcio-health-checking not installed")
        from grpc_health.v1 import health_pb2
        servicer.set(req.get("service", ""), health_pb2.HealthCheckResponse.ServingStatus.Value(req["status"]))
    return json.dumps({"ok": True}).encode("utf-8")


def counts(request: bytes, context) -> bytes:
    return json.dumps(METHODS.snapshot()).encode("utf-8")


def build_server(port: int, host: str = "127.0.0.1", max_workers: int = 128,
                 health_delay_ms: int = 0, credentials=None):
    HEALTH["delay_ms"] = health_delay_ms
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "PingPong": grpc.stream_stream_rpc_method_handler(ping_pong),
        "Stats": grpc.unary_unary_rpc_method_handler(stats),
        "Headers": grpc.unary_unary_rpc_method_handler(headers),
        "SetHealth": grpc.unary_unary_rpc_method_handler(set_health),
        "Counts": grpc.unary_unary_rpc_method_handler(counts),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_send_message_length", MAX_MSG),
            ("grpc.max_receive_message_length", MAX_MSG),
            ("grpc.so_reuseport", 0),
        ],
        interceptors=(_CountingInterceptor(),),
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        class _DelayedHealth(health.HealthServicer):
            def Check(self, request, context):
                delay = HEALTH["delay_ms"] / 1000.0
                if delay > 0:
                    end = time.monotonic() + delay
                    while context.is_active():
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        time.sleep(min(0.02, left))
                    if not context.is_active():
                        return health_pb2.HealthCheckResponse()
                return super().Check(request, context)

        servicer = _DelayedHealth()
        HEALTH["servicer"] = servicer
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    except ImportError:  # optional dependency
        pass
    if credentials is not None:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind {host}:{port}")
    return server, bound


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=128)
    parser.add_argument("--health-delay-ms", type=int, default=0,
                        help="answer every grpc.health.v1 Check only after this many ms")
    parser.add_argument("--tls-cert", help="serve TLS with this PEM chain (and --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-client-ca", help="require client certificates from this CA")
    args = parser.parse_args(argv)

    credentials = None
    if args.tls_cert:
        with open(args.tls_cert, "rb") as c, open(args.tls_key, "rb") as k:
            pair = (k.read(), c.read())
        ca = open(args.tls_client_ca, "rb").read() if args.tls_client_ca else None
        credentials = grpc.ssl_server_credentials([pair], root_certificates=ca,
                                                  require_client_auth=ca is not None)
    server, port = build_server(args.port, args.host, args.workers, args.health_delay_ms, credentials)
    server.start()
    print(f"listening on {args.host}:{port}", flush=True)

    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop.wait(0.2):
        pass
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
