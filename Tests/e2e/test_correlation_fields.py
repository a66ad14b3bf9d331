"""What goes upstream when a request repeats a field the sidecar sets (Docs/protocol.md,
"Request: correlation id"): exactly one `insight-id`, carrying the correlation id; one
`traceparent` when tracing; `insight-hops` field lines leave as one list with this hop's item.
A raw h2 client sends the repeated fields; the upstream records the headers it received."""

import pytest

from conftest import free_port

A = "0123456789abcdef0123456789abcdef"
B = "fedcba9876543210fedcba9876543210"
T = "4bf92f3577b34da6a3ce929d0e0e4736"
P = "00f067aa0ba902b7"


@pytest.fixture
def peers():
    from bridge_peers import BridgeUpstream, LoopThread
    lt = LoopThread()
    up = BridgeUpstream(lt).start()
    yield up
    up.stop()
    lt.stop()


def _forwarded(sc, up, extra):
    from bridge_peers import BRIDGE_SERVICE, H2Client, grpc_frame, grpc_request_headers
    n = len(up.requests)
    c = H2Client(sc.port)
    res = c.wait(c.request(grpc_request_headers(sc.port, BRIDGE_SERVICE + "Echo", extra), grpc_frame(b"x")))
    c.close()
    assert res.field("grpc-status") == "0", res
    assert len(up.requests) == n + 1
    return up.requests[-1]


def _values(headers, name):
    return [v for k, v in headers if k == name]


@pytest.mark.parametrize("tracing", [False, True])
def test_one_insight_id_goes_upstream(procs, peers, tracing):
    extra = ["--tracing-otlp-endpoint", f"http://127.0.0.1:{free_port()}"] if tracing else []
    sc = procs.sidecar(peers.port, extra=extra)
    # Two ids: the first (valid) one is the correlation id; the second is not forwarded.
    got = _forwarded(sc, peers, [("insight-id", A), ("insight-id", B)])
    assert _values(got, "insight-id") == [A], got
    # An invalid first one: a new id replaces both.
    got = _forwarded(sc, peers, [("insight-id", "zz"), ("insight-id", B)])
    ids = _values(got, "insight-id")
    assert len(ids) == 1 and ids[0] not in ("zz", B), got
    # A valid traceparent is the correlation id: insight-id is rewritten to its trace id.
    got = _forwarded(sc, peers, [("traceparent", f"00-{T}-{P}-01"), ("insight-id", A), ("insight-id", A)])
    assert _values(got, "insight-id") == [T], got
    # Two traceparent fields are invalid: the insight-id stays the correlation id.
    got = _forwarded(sc, peers, [("traceparent", f"00-{T}-{P}-01"), ("traceparent", f"00-{B}-{P}-01"),
                                 ("insight-id", A), ("insight-id", B)])
    assert _values(got, "insight-id") == [A], got
    if tracing:
        tps = _values(got, "traceparent")
        assert len(tps) == 1 and tps[0].split("-")[1] == A, got


def test_insight_hops_lines_leave_as_one_field(procs, peers):
    sc = procs.sidecar(peers.port)
    hops = [("insight-hops", 'a;region=x;t="1"'), ("insight-hops", 'b;region=y;t="2"')]
    got = _forwarded(sc, peers, hops)
    lines = _values(got, "insight-hops")
    assert len(lines) == 1, got
    assert lines[0].startswith('a;region=x;t="1", b;region=y;t="2", test;region=local;t="'), got
