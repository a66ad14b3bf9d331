"""A small OTLP/HTTP trace receiver for the tests: ``POST /v1/traces`` bodies decoded with
the OpenTelemetry project's own ``opentelemetry-proto`` package.

Modes: ``ok`` (200 with an empty ExportTraceServiceResponse), ``500`` (every export fails),
``hang`` (never answers until stopped), ``429`` (the first ``refusals`` exports get 429 with
``Retry-After: 1``, then as ``ok``), ``400`` (every export is refused as malformed),
``slowbody`` (answers 200 with ``content-length: 100000`` at once, then one byte a second
until stopped or the client goes away).
"""

import http.server
import threading
import time

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Span:
    def __init__(self, resource, span):
        self.resource = {a.key: _value(a.value) for a in resource.attributes}
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex()
        self.name = span.name
        self.kind = span.kind
        self.start_ns = span.start_time_unix_nano
        self.end_ns = span.end_time_unix_nano
        self.attributes = {a.key: _value(a.value) for a in span.attributes}
        self.status_code = span.status.code
        self.status_message = span.status.message

    def __repr__(self):
        return f"Span({self.name!r} {self.trace_id}/{self.span_id}<-{self.parent_span_id} {self.attributes})"


class OTLPReceiver:
    def __init__(self, mode: str = "ok", refusals: int = 2):
        self.mode = mode
        self.refusals = refusals
        self.times = []
        self.refused = 0  # spans in the bodies answered 400
        self.spans = []
        self.requests = 0
        self.paths = []
        self.headers = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                    receiver.paths.append(self.path)
                    receiver.headers.append(dict(self.headers))
                    receiver.times.append(time.monotonic())
                    refuse = receiver.mode == "429" and receiver.requests <= receiver.refusals
                if receiver.mode == "hang":
                    receiver.stopping.wait(60)
                    return
                if receiver.mode == "slowbody":
                    self.send_response(200)
                    self.send_header("content-type", "application/x-protobuf")
                    self.send_header("content-length", "100000")
                    self.end_headers()
                    try:
                        for _ in range(100000):
                            self.wfile.write(b"\0")
                            self.wfile.flush()
                            if receiver.stopping.wait(1):
                                break
                    except OSError:
                        pass  # the client closed the connection: what the test wants
                    self.close_connection = True
                    return
                if refuse:
                    self.send_response(429)
                    self.send_header("retry-after", "1")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if receiver.mode == "400":
                    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    with receiver.lock:
                        receiver.refused += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                if receiver.mode in ("500", "400"):
                    self.send_response(int(receiver.mode))
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                spans = [Span(rs.resource, s) for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
                with receiver.lock:
                    receiver.spans.extend(spans)
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_trace(self, trace_id, count, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"trace {trace_id}: {len(self.trace(trace_id))} spans after {timeout}s, want {count}")

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
