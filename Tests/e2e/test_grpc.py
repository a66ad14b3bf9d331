"""gRPC conformance cases, each run directly and through the sidecar.

For ``[sidecar]`` runs every case is also executed directly against the test
server and the two normalized outcomes (status code, details, initial and
trailing metadata minus transport-added keys, payload digests) must be equal.
"""

import dataclasses
import hashlib
import json
import queue
import threading
import time
import urllib.parse
import uuid

import grpc
import pytest

from conftest import http_get, make_channel, metric_sum
from grpc_server import SERVICE, _payload

OK = grpc.StatusCode.OK

# Keys that gRPC / HTTP stacks (or a proxy) may add by themselves.
TRANSPORT_KEYS = {
    "content-type", "user-agent", "date", "server", "via", "te",
    "content-length", "accept-encoding", "forwarded", "x-forwarded-for",
    "x-forwarded-proto", "x-request-id", "traceparent", "tracestate",
}
TRANSPORT_PREFIXES = (":", "grpc-", "x-insight", "insight-", "x-envoy-")


def _transport_key(key: str) -> bool:
    return key in TRANSPORT_KEYS or key.startswith(TRANSPORT_PREFIXES)


def norm_md(md):
    items = [(k, v) for k, v in (md or ()) if not _transport_key(k)]
    return tuple(sorted(items, key=lambda kv: (kv[0], repr(kv[1]))))


def digest(data: bytes):
    return (len(data), hashlib.sha256(data).hexdigest()[:16])


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    initial: tuple
    trailing: tuple
    responses: tuple  # digests of response messages, in order

    def md(self, which, key):
        return [v for k, v in getattr(self, which) if k == key]


def _outcome(call, responses):
    return Outcome(call.code(), call.details() or "", norm_md(call.initial_metadata()),
                   norm_md(call.trailing_metadata()), tuple(digest(r) for r in responses))


def method(name):
    return f"/{SERVICE}/{name}"


def unary(ch, payload=b"", md=(), timeout=30.0, name="Unary"):
    fn = ch.unary_unary(method(name) if "/" not in name else name)
    try:
        resp, call = fn.with_call(payload, metadata=list(md), timeout=timeout)
        return _outcome(call, [resp])
    except grpc.RpcError as e:
        return _outcome(e, [])


def server_stream(ch, payload=b"", md=(), timeout=30.0):
    it = ch.unary_stream(method("ServerStream"))(payload, metadata=list(md), timeout=timeout)
    got = []
    try:
        for msg in it:
            got.append(msg)
    except grpc.RpcError:
        pass
    return _outcome(it, got)


def client_stream(ch, messages, md=(), timeout=30.0):
    fn = ch.stream_unary(method("ClientStream"))
    try:
        resp, call = fn.with_call(iter(list(messages)), metadata=list(md), timeout=timeout)
        return _outcome(call, [resp])
    except grpc.RpcError as e:
        return _outcome(e, [])


def compare(target, run):
    """Run ``run(channel)`` on the target; via the sidecar also directly, and
    require identical outcomes. Returns the target's outcome."""
    ch = make_channel(target.addr)
    try:
        out = run(ch)
    finally:
        ch.close()
    if target.via_sidecar:
        ch = make_channel(target.direct_addr)
        try:
            direct = run(ch)
        finally:
            ch.close()
        assert out == direct, f"sidecar outcome differs from direct:\n sidecar={out}\n direct ={direct}"
    return out


def new_tag():
    return uuid.uuid4().hex


def server_stats(addr, tag):
    """Counters the test server recorded for calls carrying ``x-tag: tag``
    (always asked directly, never through the sidecar)."""
    ch = make_channel(addr)
    try:
        return json.loads(ch.unary_unary(method("Stats"))(tag.encode(), timeout=5))
    finally:
        ch.close()


def wait_stats(addr, tag, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    stats = server_stats(addr, tag)
    while not pred(stats) and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = server_stats(addr, tag)
    return stats


# --------------------------------------------------------------------------
# unary
# --------------------------------------------------------------------------

def test_empty_unary(target):
    out = compare(target, lambda ch: unary(ch, b""))
    assert out.code == OK
    assert out.responses == (digest(b""),)
    assert out.initial == () and out.trailing == ()


def test_large_unary(target):
    req = _payload(271828)
    out = compare(target, lambda ch: unary(ch, req, [("x-response-size", "314159")]))
    assert out.code == OK, out.details
    assert out.responses == (digest(_payload(314159)),)


def test_16mib_unary_request_and_response(target):
    req = bytes(reversed(_payload(16 * 1024 * 1024)))
    out = compare(target, lambda ch: unary(ch, req, timeout=60))
    assert out.code == OK, out.details
    assert out.responses == (digest(req),)
    assert out.responses[0][0] == 16 * 1024 * 1024


# --------------------------------------------------------------------------
# streaming
# --------------------------------------------------------------------------

CLIENT_SIZES = [0, 1, 1000, 65536, 123457, 8, 3 * 1024 * 1024]


def test_client_streaming(target):
    msgs = [_payload(n) for n in CLIENT_SIZES]
    out = compare(target, lambda ch: client_stream(ch, msgs, [("x-echo-mode", "cs")]))
    assert out.code == OK, out.details
    assert out.responses == (digest(str(sum(CLIENT_SIZES)).encode()),)
    assert out.md("trailing", "x-message-count") == [str(len(CLIENT_SIZES))]
    assert out.md("initial", "x-echo-mode") == ["cs"]


@pytest.mark.parametrize("count,size", [(20, 1000), (5, 200_000)])
def test_server_streaming(target, count, size):
    md = [("x-count", str(count)), ("x-size", str(size)), ("x-trail-done", "yes")]
    out = compare(target, lambda ch: server_stream(ch, b"go", md))
    assert out.code == OK, out.details
    assert out.responses == (digest(_payload(size)),) * count
    assert out.md("trailing", "x-trail-done") == ["yes"]


def _ping_pong(ch, rounds=40):
    q = queue.Queue()
    done = object()

    def requests():
        while True:
            item = q.get()
            if item is done:
                return
            yield item

    call = ch.stream_stream(method("PingPong"))(requests(), metadata=[("x-echo-pp", "1")], timeout=30)
    echoed = []
    try:
        for i in range(rounds):
            msg = f"ping-{i}-".encode() + _payload(i * 997)
            q.put(msg)
            # Only one message is outstanding: receiving its echo before the
            # next one is sent proves the streams are interleaved.
            reply = next(call)
            assert reply == msg, f"round {i}: echo mismatch"
            echoed.append(reply)
        q.put(done)
        rest = list(call)
        assert rest == []
    except grpc.RpcError:
        q.put(done)
    return _outcome(call, echoed)


def test_ping_pong_bidi(target):
    out = compare(target, _ping_pong)
    assert out.code == OK, out.details
    assert len(out.responses) == 40
    assert out.md("initial", "x-echo-pp") == ["1"]


def test_empty_client_stream(target):
    out = compare(target, lambda ch: client_stream(ch, []))
    assert out.code == OK, out.details
    assert out.responses == (digest(b"0"),)
    assert out.md("trailing", "x-message-count") == ["0"]


def test_empty_server_stream(target):
    out = compare(target, lambda ch: server_stream(ch, b"", [("x-count", "0")]))
    assert out.code == OK, out.details
    assert out.responses == ()


def test_empty_bidi_stream(target):
    out = compare(target, lambda ch: _ping_pong(ch, rounds=0))
    assert out.code == OK, out.details
    assert out.responses == ()


# --------------------------------------------------------------------------
# metadata and status
# --------------------------------------------------------------------------

BIN = b"\x00\xff\xfe\x80\xc3(binary\x01\x7f"


def test_custom_metadata_echo(target):
    md = [
        ("x-echo-text", "hello"),
        ("x-echo-multi", "a b,c;d=e"),
        ("x-echo-raw-bin", BIN),
        ("x-trail-text", "bye"),
        ("x-trail-bin", BIN),
        ("x-unechoed", "nope"),
    ]
    out = compare(target, lambda ch: unary(ch, b"meta", md))
    assert out.code == OK, out.details
    assert out.responses == (digest(b"meta"),)
    assert out.initial == (("x-echo-multi", "a b,c;d=e"), ("x-echo-raw-bin", BIN), ("x-echo-text", "hello"))
    assert out.trailing == (("x-trail-bin", BIN), ("x-trail-text", "bye"))


@pytest.mark.parametrize("code,message,with_md", [
    # no initial metadata -> "Trailers-Only" response (one HEADERS frame)
    (grpc.StatusCode.INVALID_ARGUMENT, "héllo wörld ✓ 世界", False),
    # initial metadata + DATA-less body + trailers
    (grpc.StatusCode.FAILED_PRECONDITION, "100% broken: 'quoted' \"double\" \t tab", True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "", False),
], ids=["unicode-trailers-only", "ascii-with-metadata", "empty-message"])
def test_status_with_message(target, code, message, with_md):
    md = [("x-status-code", str(code.value[0]))]
    if with_md:
        md += [("x-echo-e", "1"), ("x-trail-bin", BIN),
               ("x-status-message", urllib.parse.quote(message))]
    else:
        md += [("x-status-message-bin", message.encode("utf-8"))]

    def run(ch):
        try:
            ch.unary_unary(method("Unary")).with_call(b"x", metadata=md, timeout=10)
        except grpc.RpcError as e:
            return _outcome(e, [])
        raise AssertionError("call unexpectedly succeeded")

    out = compare(target, run)
    assert out.code == code
    assert out.details == message
    if with_md:
        assert out.initial == (("x-echo-e", "1"),)
        assert out.trailing == (("x-trail-bin", BIN),)
    else:
        assert out.initial == () and out.trailing == ()


@pytest.mark.parametrize("path", [f"/{SERVICE}/NoSuchMethod", "/insight.test.v1.Nope/Unary"])
def test_unimplemented(target, path):
    out = compare(target, lambda ch: unary(ch, b"?", name=path))
    assert out.code == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------
# deadlines and cancellation
# --------------------------------------------------------------------------

def test_deadline_exceeded(target):
    tag = new_tag()
    ch = make_channel(target.addr)
    try:
        start = time.monotonic()
        out = unary(ch, b"zzz", [("x-sleep-ms", "3000"), ("x-tag", tag)], timeout=0.5)
        elapsed = time.monotonic() - start
    finally:
        ch.close()
    assert out.code == grpc.StatusCode.DEADLINE_EXCEEDED, out
    assert 0.4 <= elapsed < 2.0, f"call took {elapsed:.2f}s"
    # the server must learn that the call is over (deadline/RST propagated)
    stats = wait_stats(target.direct_addr, tag, lambda s: s["cancelled"].get("Unary") == 1)
    assert stats["started"].get("Unary") == 1
    assert stats["cancelled"].get("Unary") == 1, stats
    assert stats["messages_sent"].get("Unary") is None, stats


def test_cancel_after_begin(target, channel):
    tag = new_tag()
    gate = threading.Event()

    def requests():
        gate.wait(15)
        return
        yield  # pragma: no cover  (makes this a generator)

    fut = channel.stream_unary(method("ClientStream")).future(
        requests(), metadata=[("x-tag", tag)], timeout=20)
    try:
        stats = wait_stats(target.direct_addr, tag, lambda s: s["started"].get("ClientStream") == 1)
        assert stats["started"].get("ClientStream") == 1, "server never saw the call start"
        assert fut.cancel() is True
        assert fut.cancelled()
        assert fut.code() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.FutureCancelledError):
            fut.result(timeout=5)
    finally:
        gate.set()
    stats = wait_stats(target.direct_addr, tag, lambda s: s["cancelled"].get("ClientStream") == 1)
    assert stats["cancelled"].get("ClientStream") == 1, stats
    assert stats["completed"].get("ClientStream") is None, stats
    assert stats["messages_received"].get("ClientStream") is None, stats


def test_cancel_after_first_response(target, channel):
    tag = new_tag()
    md = [("x-count", "100"), ("x-size", "64"), ("x-interval-ms", "50"), ("x-tag", tag)]
    it = channel.unary_stream(method("ServerStream"))(b"", metadata=md, timeout=20)
    first = next(it)
    assert first == _payload(64)
    it.cancel()
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            pass
    assert e.value.code() == grpc.StatusCode.CANCELLED
    stats = wait_stats(target.direct_addr, tag, lambda s: s["cancelled"].get("ServerStream") == 1)
    assert stats["cancelled"].get("ServerStream") == 1, stats
    sent = stats["messages_sent"].get("ServerStream", 0)
    assert 1 <= sent < 100, stats
    # and the server really stopped producing
    time.sleep(0.3)
    assert server_stats(target.direct_addr, tag)["messages_sent"].get("ServerStream", 0) == sent


# --------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------

def test_1000_concurrent_streams_one_channel(target, channel):
    tag = new_tag()
    conns_before = None
    if target.via_sidecar:
        _, text = http_get(target.sidecar.admin_port, "/metrics")
        conns_before = metric_sum(text, "insight_downstream_connections_total")
    fn = channel.unary_unary(method("Unary"))
    n = 1000
    payloads = [f"req-{i}-".encode() * (1 + i % 17) for i in range(n)]
    futures = [fn.future(p, metadata=[("x-tag", tag), ("x-echo-i", str(i))], timeout=60)
               for i, p in enumerate(payloads)]
    failures = []
    for i, f in enumerate(futures):
        try:
            resp, call = f.result(), f
            if resp != payloads[i] or norm_md(call.initial_metadata()) != (("x-echo-i", str(i)),):
                failures.append((i, "wrong payload/metadata"))
        except grpc.RpcError as e:
            failures.append((i, e.code(), e.details()))
    assert not failures, f"{len(failures)} of {n} failed, first: {failures[:5]}"
    stats = server_stats(target.direct_addr, tag)
    assert stats["started"].get("Unary") == n
    assert stats["completed"].get("Unary") == n
    if target.via_sidecar:
        _, text = http_get(target.sidecar.admin_port, "/metrics")
        conns_after = metric_sum(text, "insight_downstream_connections_total")
        assert conns_before is not None and conns_after is not None, "metric missing"
        assert conns_after - conns_before == 1, "expected all 1000 streams on ONE connection"
