"""Synthetic probes (issue 4) end to end: health and echo probes, the one-shot
``probe`` command, sharing the upstream pool with traffic, and target discovery from
Consul (fake_consul.py) and a targets file.

Every wait is bounded (``wait_for``); metrics are read from the sidecars' /metrics.
"""

import json
import threading
import time

import grpc
import pytest

from conftest import (TEST_SERVICE, free_port, http_get, make_channel, metric_sum, metrics_text,
                      parse_metrics, run_probe_cli, server_counts, set_server_health, tail,
                      wait_for)
from fake_consul import FakeConsul, entry

TOTAL = "insight_probe_total"
UP = "insight_probe_up"
DURATION = "insight_probe_duration_seconds"
TARGETS = "insight_probe_targets"
DISCOVERY_ERRORS = "insight_discovery_errors_total"
ECHO_ANSWERED = "insight_probe_echo_answered_total"
SEGMENT_COUNT = "insight_segment_duration_seconds_count"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
TEST_SVC_NAME = "insight.test.v1.Test"


def value(text, name, **labels) -> float:
    """Sum of the matching samples, 0 if there are none."""
    return metric_sum(text, name, **labels) or 0.0


def series(text, name, **labels):
    return [(lab, v) for n, lab, v in parse_metrics(text) if n == name
            and all(lab.get(k) == want for k, want in labels.items())]


def results_of(text, target):
    """{(result, code): count} of one target."""
    return {(lab["result"], lab["code"]): v for lab, v in series(text, TOTAL, target=target)}


def health_checks(port) -> int:
    return server_counts(port).get(HEALTH_CHECK, 0)


# --------------------------------------------------------------------------
# 1. health probes: every result class, metrics and the probe command
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def health_servers():
    """An ordinary grpc_server.py and one whose health checks take 1.5 s."""
    from conftest import _ALL_PROCS, start_grpc_server_args
    ok = start_grpc_server_args()
    slow = start_grpc_server_args(["--health-delay-ms", "1500"])
    yield ok, slow
    for p in (ok, slow):
        p.kill()
        if p in _ALL_PROCS:
            _ALL_PROCS.remove(p)


EXPECTED = {
    "ok": ("success", "OK"),
    "flip": ("success", "OK"),
    "unknown-svc": ("rpc_error", "NOT_FOUND"),
    "down": ("connect_error", "UNAVAILABLE"),
    "slow": ("timeout", "DEADLINE_EXCEEDED"),
}


def test_health_probe_results_and_metrics(probe_procs, health_servers):
    ok, slow = health_servers
    down = free_port()
    addr = lambda p: f"127.0.0.1:{p}"  # noqa: E731
    sc = probe_procs.sidecar({
        "upstream": ok.port, "hop": "prober", "region": "a", "log_level": "info",
        "probes": {"interval": "200ms", "timeout": "400ms", "targets": [
            {"name": "ok", "address": addr(ok.port), "region": "a", "kind": "health"},
            {"name": "flip", "address": addr(ok.port), "region": "a", "kind": "health",
             "service": TEST_SVC_NAME},
            {"name": "unknown-svc", "address": addr(ok.port), "region": "a", "service": "no.such.Service"},
            {"name": "down", "address": addr(down), "region": "a"},
            {"name": "slow", "address": addr(slow.port), "region": "a"},
        ]}})
    try:
        def all_seen():
            text = metrics_text(sc)
            return text if all(results_of(text, t).get(exp, 0) >= 2 for t, exp in EXPECTED.items()) else None

        text = wait_for(all_seen, 6, "every target probed twice with its expected result")
        assert value(text, TARGETS, source="static") == 5
        for target, (result, code) in EXPECTED.items():
            got = results_of(text, target)
            assert set(got) == {(result, code)}, f"{target}: {got}"
            labels = series(text, TOTAL, target=target)[0][0]
            assert labels["hop"] == "prober" and labels["region"] == "a"
            assert labels["target_region"] == "a" and labels["kind"] == "health", labels
            assert value(text, UP, target=target) == (1 if result == "success" else 0), target
        # Only successful probes have a latency; a health check on loopback is fast.
        assert value(text, DURATION + "_count", target="ok") >= 2
        assert value(text, DURATION + "_count", target="down") == 0
        assert value(text, DURATION + "_sum", target="ok") / value(text, DURATION + "_count", target="ok") < 0.2

        # SERVING -> NOT_SERVING -> SERVING for one service.
        set_server_health(ok.port, TEST_SVC_NAME, "NOT_SERVING")
        text = wait_for(lambda: (lambda t: t if value(t, TOTAL, target="flip", result="not_serving") >= 2
                                 and value(t, UP, target="flip") == 0 else None)(metrics_text(sc)),
                        3, "flip: not_serving and probe_up 0")
        assert results_of(text, "flip").get(("not_serving", "OK"), 0) >= 2, results_of(text, "flip")
        assert value(text, UP, target="ok") == 1
        set_server_health(ok.port, TEST_SVC_NAME, "SERVING")
        before = value(text, TOTAL, target="flip", result="success")
        wait_for(lambda: (lambda t: value(t, TOTAL, target="flip", result="success") > before
                          and value(t, UP, target="flip") == 1)(metrics_text(sc)),
                 3, "flip: success again and probe_up 1")
        log = tail(sc.log, 400)
        assert "probe result changed" in log, log[-2000:]
    finally:
        set_server_health(ok.port, TEST_SVC_NAME, "SERVING")


def test_probe_cli_exit_codes_and_json(health_servers):
    ok, slow = health_servers
    down = free_port()
    set_server_health(ok.port, TEST_SVC_NAME, "NOT_SERVING")
    try:
        cases = [
            ("success", [f"127.0.0.1:{ok.port}"], [], 0, "success", "OK"),
            ("not serving", [f"127.0.0.1:{ok.port}"], ["--service", TEST_SVC_NAME], 4, "not_serving", "OK"),
            ("unknown service", [f"127.0.0.1:{ok.port}"], ["--service", "no.such.Service"], 3,
             "rpc_error", "NOT_FOUND"),
            ("nothing listening", [f"127.0.0.1:{down}"], [], 2, "connect_error", "UNAVAILABLE"),
            ("slow", [f"127.0.0.1:{slow.port}"], ["--timeout", "300ms"], 3, "timeout", "DEADLINE_EXCEEDED"),
        ]
        results = {}

        def run(case):
            name, target, extra, *_ = case
            t0 = time.monotonic()
            j = run_probe_cli(["--target", target[0], "--json"] + extra)
            elapsed = time.monotonic() - t0
            txt = run_probe_cli(["--target", target[0]] + extra)
            results[name] = (j, txt, elapsed)

        threads = [threading.Thread(target=run, args=(c,)) for c in cases]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for name, target, extra, code, result, grpc_code in cases:
            j, txt, elapsed = results[name]
            assert j.returncode == code, f"{name}: exit {j.returncode}, want {code}\n{j.stdout}\n{j.stderr}"
            assert txt.returncode == code, f"{name}: exit {txt.returncode}, want {code}\n{txt.stdout}"
            out = json.loads(j.stdout)
            assert out["result"] == result and out["code"] == grpc_code, (name, out)
            assert out["kind"] == "health" and out["target"] == target[0], (name, out)
            assert isinstance(out["ms"], (int, float)) and out["ms"] >= 0, (name, out)
            assert "message" in out, (name, out)
            # Straight to the server: at most the command's own segment (probe -> service).
            assert all(sg["hop"] == "probe" and sg["next"] == "service" for sg in out["segments"]), out
            first = txt.stdout.splitlines()[0]
            assert first.startswith(f"health probe of {target[0]}: {result} ({grpc_code})"), (name, first)
            if name == "slow":
                assert 250 <= out["ms"] < 1000, out
                assert elapsed < 5, elapsed
            if name == "not serving":
                assert out["message"], out
    finally:
        set_server_health(ok.port, TEST_SVC_NAME, "SERVING")


# --------------------------------------------------------------------------
# 2. echo probes: mediary-a -> nghttpx -> mediary-b -> gateway-b (receiver)
# --------------------------------------------------------------------------

HOPS = ["mediary-a", "mediary-b", "gateway-b"]
NEXT = {"mediary-a": "mediary-b", "mediary-b": "gateway-b", "gateway-b": "service"}


def test_echo_probe_through_chain_to_receiver(probe_procs):
    server = probe_procs.grpc_server()
    gb = probe_procs.sidecar({"upstream": server.port, "hop": "gateway-b", "region": "b",
                              "receiver": True}, name="sidecar-gateway-b")
    mb = probe_procs.sidecar({"upstream": gb.port, "hop": "mediary-b", "region": "b"},
                             name="sidecar-mediary-b")
    ngx = probe_procs.nghttpx(mb.port)
    ma = probe_procs.sidecar({
        "upstream": ngx.port, "hop": "mediary-a", "region": "a",
        "probes": {"interval": "200ms", "timeout": "1s",
                   "route_headers": {"b": {":authority": "gw-b", "x-region": "b"}},
                   "targets": [{"name": "receiver-b", "address": f"127.0.0.1:{gb.port}",
                                "region": "b", "kind": "echo"}]}}, name="sidecar-mediary-a")

    def enough():
        t = metrics_text(ma)
        return t if value(t, TOTAL, target="receiver-b", result="success") >= 3 else None

    try:
        text = wait_for(enough, 6, "3 successful echo probes at mediary-a")
    except AssertionError:
        raise AssertionError(f"results: {results_of(metrics_text(ma), 'receiver-b')}")
    answered = value(metrics_text(gb), ECHO_ANSWERED, hop="gateway-b")
    ok = value(text, TOTAL, target="receiver-b", result="success")
    assert results_of(text, "receiver-b") == {("success", "OK"): ok}, results_of(text, "receiver-b")
    labels = series(text, TOTAL, target="receiver-b")[0][0]
    assert labels == {"hop": "mediary-a", "region": "a", "target": "receiver-b", "target_region": "b",
                      "kind": "echo", "result": "success", "code": "OK"}, labels
    assert value(text, UP, target="receiver-b") == 1
    assert answered >= ok, (answered, ok)
    assert value(metrics_text(mb), ECHO_ANSWERED) == 0
    # The service behind the receiver never sees an echo (nor anything else).
    counts = server_counts(server.port)
    assert not any("Probe" in m or "Health" in m for m in counts), counts

    # Per-hop segments at the prober, recorded as probe traffic.
    for hop in HOPS:
        n = value(text, SEGMENT_COUNT, hop="mediary-a", source="probe", segment=hop)
        assert n >= 1, f"no probe segment {hop} at mediary-a:\n" + "\n".join(
            l for l in text.splitlines() if "segment" in l)
        assert value(text, SEGMENT_COUNT, hop="mediary-a", source="probe", segment=hop, next=NEXT[hop]) == n
    assert value(text, SEGMENT_COUNT, hop="mediary-a", source="traffic") == 0
    # mediary-b saw the probes as probes, too.
    assert value(metrics_text(mb), SEGMENT_COUNT, hop="mediary-b", source="probe", segment="gateway-b") >= 1

    # One-shot: probe --echo --via the outermost sidecar.
    r = run_probe_cli(["--echo", "--target", f"127.0.0.1:{gb.port}", "--via", ma.addr,
                       "--header", ":authority=gw-b", "--json"])
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout} {r.stderr}"
    out = json.loads(r.stdout)
    assert out["result"] == "success" and out["kind"] == "echo" and out["via"] == ma.addr, out
    assert out["receiver"] == {"hop": "gateway-b", "region": "b"}, out
    hops = [s["hop"] for s in out["segments"]]
    assert hops[-3:] == HOPS, out["segments"]
    for s in out["segments"]:
        if s["hop"] in NEXT:
            assert s["next"] == NEXT[s["hop"]] and s["ms"] >= 0, s
    r = run_probe_cli(["--echo", "--target", f"127.0.0.1:{gb.port}", "--via", ma.addr,
                       "--header", ":authority=gw-b"])
    assert r.returncode == 0, r.stdout
    assert "answered by gateway-b in region b" in r.stdout, r.stdout
    for hop in HOPS:
        assert any(line.split()[:2] == [hop, NEXT[hop]] for line in r.stdout.splitlines()), r.stdout
    assert value(metrics_text(gb), ECHO_ANSWERED, hop="gateway-b") > answered
    counts = server_counts(server.port)
    assert not any("Probe" in m for m in counts), counts


# --------------------------------------------------------------------------
# 3. probes share the upstream pool with traffic
# --------------------------------------------------------------------------

@pytest.mark.parametrize("loops", [1, 2])
def test_probes_share_upstream_pool(probe_procs, loops):
    server = probe_procs.grpc_server()
    sc = probe_procs.sidecar({
        "upstream": server.port, "hop": "edge", "region": "a", "event_loops": loops,
        "probes": {"interval": "100ms", "timeout": "1s", "targets": [
            # Another region: the probe goes to the upstream, not to this address.
            {"name": "remote", "address": "10.255.255.1:50051", "region": "b", "kind": "health"},
            {"name": "remote-2", "address": "10.255.255.2:50051", "region": "b", "kind": "health"},
        ]}})
    stop = time.monotonic() + 1.5
    errors = []

    def traffic(i):
        ch = make_channel(sc.addr)
        try:
            f = ch.unary_unary(TEST_SERVICE + "Unary")
            while time.monotonic() < stop:
                f(b"x" * 100, timeout=5, metadata=(("x-tag", f"pool-{i}"),))
        except grpc.RpcError as e:
            errors.append(e)
        finally:
            ch.close()

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    text = metrics_text(sc)
    for name in ("remote", "remote-2"):
        assert value(text, TOTAL, target=name, result="success") >= 5, results_of(text, name)
    assert health_checks(server.port) >= 10
    conns = value(text, "insight_upstream_connections_total")
    if loops == 1:
        assert conns == 1, f"{conns} upstream connections with one event loop"
    else:
        assert 1 <= conns <= loops, f"{conns} upstream connections with {loops} event loops"


# --------------------------------------------------------------------------
# 4. Consul discovery
# --------------------------------------------------------------------------

SVC = "gateway"


@pytest.fixture(scope="module")
def consul_env():
    """fake Consul + two gRPC servers (U: the sidecar's upstream, P1) + a sidecar in
    region a probing Consul's `gateway` (tag insight) in dc1 (region a) and dc2 (region b)."""
    from conftest import _ALL_PROCS, start_config_sidecar, start_grpc_server_args
    procs = []
    fake = FakeConsul(token="secret").start()
    try:
        u = start_grpc_server_args()
        procs.append(u)
        p1 = start_grpc_server_args()
        procs.append(p1)
        fake.set_service(SVC, [
            entry(SVC, "gw1", p1.port, tags=["insight"]),
            entry(SVC, "gw-untagged", p1.port, tags=["other"]),
            entry(SVC, "gw-critical", p1.port, tags=["insight"], status="critical"),
        ], dc="dc1")
        fake.set_service(SVC, [entry(SVC, "gw2", 7000, address="10.9.9.9", node_address="10.0.0.2",
                                     tags=["insight"])], dc="dc2")
        sc = start_config_sidecar({
            "upstream": u.port, "hop": "prober", "region": "a", "log_level": "info",
            "probes": {"interval": "200ms", "timeout": "500ms", "consul": {
                "address": fake.address, "token": "secret", "wait": "1s",
                "services": [{"name": SVC, "kind": "health", "service": "", "tag": "insight"}],
                "datacenters": ["dc1", "dc2"], "region_for_datacenter": {"dc1": "a", "dc2": "b"}}}},
            name="sidecar-consul")
        procs.append(sc)
        yield fake, sc, u, p1
    finally:
        for p in reversed(procs):
            p.kill()
            if p in _ALL_PROCS:
                _ALL_PROCS.remove(p)
        fake.stop()


def _count(sc, target, result="success"):
    return value(metrics_text(sc), TOTAL, target=target, result=result)


def _growing(sc, target, by=2, timeout=3.0):
    start = _count(sc, target)
    wait_for(lambda: _count(sc, target) >= start + by, timeout, f"{by} more successful probes of {target}")


def test_consul_targets_appear_change_disappear(consul_env):
    fake, sc, u, p1 = consul_env
    text = wait_for(lambda: (lambda t: t if value(t, TARGETS, source="consul") == 2
                             and value(t, TOTAL, target="gateway/gw1", result="success") >= 1
                             and value(t, TOTAL, target="gateway/gw2", result="success") >= 1
                             else None)(metrics_text(sc)), 6, "consul targets gw1 and gw2 probed")
    gw1 = series(text, TOTAL, target="gateway/gw1")[0][0]
    gw2 = series(text, TOTAL, target="gateway/gw2")[0][0]
    assert gw1["target_region"] == "a" and gw2["target_region"] == "b", (gw1, gw2)
    assert not series(text, TOTAL, target="gateway/gw-untagged"), "untagged instance probed"
    assert not series(text, TOTAL, target="gateway/gw-critical"), "failing instance probed"
    assert health_checks(p1.port) >= 1  # gw1: same region, straight to its address
    assert health_checks(u.port) >= 1   # gw2: other region, through the upstream

    # The queries: token, passing, tag, dc; then blocking ones with the last index.
    time.sleep(1.2)
    reqs = fake.requests_for(SVC)
    assert reqs and all(r["token"] == "secret" for r in reqs), reqs[:3]
    assert all("passing" in r["query"] and r["query"].get("tag") == "insight" for r in reqs), reqs[:3]
    assert {r["query"].get("dc") for r in reqs} == {"dc1", "dc2"}, reqs[:3]
    blocking = [r for r in reqs if "index" in r["query"]]
    assert blocking, f"no blocking queries: {[r['path'] for r in reqs]}"
    assert all(r["query"].get("wait") == "1s" for r in blocking), [r["path"] for r in blocking]
    dc1_index = fake.index_of(SVC, "dc1")
    assert any(r["query"]["index"] == str(dc1_index) and r["query"]["dc"] == "dc1" for r in blocking), \
        [r["path"] for r in blocking]
    # Blocking queries block: far fewer requests than one per wait per watch would be with polling.
    window = [r for r in reqs if r["t"] > time.monotonic() - 1.0]
    assert len(window) <= 6, [r["path"] for r in window]

    # Change: gw1 moves from P1 to U.
    t0 = time.monotonic()
    fake.set_service(SVC, [entry(SVC, "gw1", u.port, tags=["insight"]),
                           entry(SVC, "gw-untagged", p1.port, tags=["other"])], dc="dc1")

    def moved():
        a = health_checks(p1.port)
        time.sleep(0.5)
        return health_checks(p1.port) == a
    wait_for(moved, 4, "gw1 no longer probed at its old address")
    changed_after = time.monotonic() - t0
    _growing(sc, "gateway/gw1")
    assert value(metrics_text(sc), TARGETS, source="consul") == 2
    assert changed_after < 2.5, f"address change took {changed_after:.1f}s (blocking query should return at once)"

    # Disappear: dc2 has no instances any more.
    fake.set_service(SVC, [], dc="dc2")
    wait_for(lambda: value(metrics_text(sc), TARGETS, source="consul") == 1, 3, "consul targets == 1")
    time.sleep(0.3)  # a probe in flight may still finish
    gone = _count(sc, "gateway/gw2")
    time.sleep(0.8)
    assert _count(sc, "gateway/gw2") == gone, "removed target still probed"
    _growing(sc, "gateway/gw1")
    # Back for the fault tests.
    fake.set_service(SVC, [entry(SVC, "gw2", 7000, address="10.9.9.9", tags=["insight"])], dc="dc2")
    wait_for(lambda: value(metrics_text(sc), TARGETS, source="consul") == 2, 3, "gw2 back")


FAULTS = [
    # (name, reason, inject, clear)
    ("500", "http_5xx", lambda f: f.set_fault("500"), lambda f: f.clear_fault()),
    ("403", "http_4xx", lambda f: setattr(f, "token", "another"), lambda f: setattr(f, "token", "secret")),
    ("malformed", "malformed", lambda f: f.set_fault("malformed"), lambda f: f.clear_fault()),
    ("no_index", "malformed", lambda f: f.set_fault("no_index"), lambda f: f.clear_fault()),
    ("garbage", "protocol", lambda f: f.set_fault("garbage"), lambda f: f.clear_fault()),
    ("huge", "protocol", lambda f: f.set_fault("huge"), lambda f: f.clear_fault()),
    ("refuse", "connect", lambda f: f.refuse(), lambda f: f.resume()),
    ("backwards", "index_backwards", lambda f: f.reset_index(1), lambda f: None),
]


@pytest.mark.parametrize("fault,reason,inject,clear", FAULTS, ids=[f[0] for f in FAULTS])
def test_consul_fault_keeps_last_good_targets(consul_env, fault, reason, inject, clear):
    fake, sc, u, p1 = consul_env
    wait_for(lambda: value(metrics_text(sc), TARGETS, source="consul") == 2, 6, "two consul targets")
    errors_before = value(metrics_text(sc), DISCOVERY_ERRORS, source="consul", reason=reason)
    inject(fake)
    try:
        wait_for(lambda: value(metrics_text(sc), DISCOVERY_ERRORS, source="consul", reason=reason)
                 > errors_before, 5, f"{DISCOVERY_ERRORS}{{source=consul,reason={reason}}} to increase")
        # The last good set stays and is still probed.
        _growing(sc, "gateway/gw1")
        _growing(sc, "gateway/gw2")
        assert value(metrics_text(sc), TARGETS, source="consul") == 2
    finally:
        clear(fake)
    t_clear = time.monotonic()
    # Recovery: both watches get good answers again (within the 1-2 s backoff).
    wait_for(lambda: fake.ok_responses_since(t_clear) >= 2, 8, "consul queries succeed again")
    assert "consul query failed, keeping the last good targets" in tail(sc.log, 400)
    # And changes are picked up again.
    fake.set_service(SVC, [entry(SVC, "gw1", u.port, tags=["insight"]),
                           entry(SVC, f"gw-{fault}", p1.port, tags=["insight"])], dc="dc1")
    wait_for(lambda: value(metrics_text(sc), TARGETS, source="consul") == 3, 4,
             f"a new instance after the {fault} fault")
    fake.set_service(SVC, [entry(SVC, "gw1", u.port, tags=["insight"])], dc="dc1")
    wait_for(lambda: value(metrics_text(sc), TARGETS, source="consul") == 2, 4, "back to two targets")


def test_consul_slow_answer_is_a_timeout(consul_env):
    """No answer at all: the query times out (after wait + 10 s) with reason timeout."""
    fake, sc, u, p1 = consul_env
    before = value(metrics_text(sc), DISCOVERY_ERRORS, source="consul", reason="timeout")
    fake.set_fault("slow")
    t_fault = time.monotonic()
    try:
        try:
            wait_for(lambda: value(metrics_text(sc), DISCOVERY_ERRORS, source="consul", reason="timeout")
                     > before, 16, "discovery timeout counted", interval=0.25)
        except AssertionError as e:
            recent = [(round(r["t"] - t_fault, 2), r["path"]) for r in fake.requests_for(SVC)
                      if r["t"] > t_fault - 3]
            errs = series(metrics_text(sc), DISCOVERY_ERRORS, source="consul")
            raise AssertionError(f"{e}\nrequests since fault-3s: {recent}\nerrors: {errs}")
        assert value(metrics_text(sc), TARGETS, source="consul") == 2
        _growing(sc, "gateway/gw1")
    finally:
        fake.clear_fault()
    t_clear = time.monotonic()
    wait_for(lambda: fake.ok_responses_since(t_clear) >= 2, 8, "consul queries succeed again")


# --------------------------------------------------------------------------
# 4b. Consul without a datacenter mapping (issue 15): probes reach the instances
# --------------------------------------------------------------------------

UNMAPPED = "insight_probe_unmapped_targets_total"


def _probe_statuses(sc):
    status, body = http_get(sc.admin_port, "/api/v1/hops")
    assert status == 200, body
    return {p["target"]: p for p in json.loads(body)["probes"]}


def test_consul_local_datacenter_probes_instances_not_the_upstream(probe_procs):
    """No ``datacenters`` and no ``region_for_datacenter``: the local agent's instances are in
    the sidecar's region and are probed at their own address. Before, their region was the
    datacenter's name ("dc1" != "a"), the probes went to the upstream, and an instance on a
    closed port showed insight_probe_up 1."""
    u = probe_procs.grpc_server()
    p1 = probe_procs.grpc_server()
    dead = free_port()
    fake = FakeConsul().start()
    try:
        fake.set_service("api", [entry("api", "live", p1.port), entry("api", "dead", dead)])
        sc = probe_procs.sidecar({
            "upstream": u.port, "hop": "prober", "region": "a", "log_level": "info",
            "probes": {"interval": "200ms", "timeout": "500ms", "consul": {
                "address": fake.address, "wait": "1s", "services": [{"name": "api"}]}}},
            name="sidecar-consul-local")

        def settled():
            t = metrics_text(sc)
            live, down = series(t, UP, target="api/live"), series(t, UP, target="api/dead")
            if live and down and live[0][1] == 1 and down[0][1] == 0:
                return t
            return None
        text = wait_for(settled, 6, "api/live up 1 and api/dead up 0")
        assert {lab["target_region"] for lab, _ in series(text, UP)} == {"a"}
        assert results_of(text, "api/dead").keys() == {("connect_error", "UNAVAILABLE")}, results_of(text, "api/dead")
        assert health_checks(u.port) == 0, "probes went through the upstream instead of to the instances"
        assert health_checks(p1.port) >= 1
        # The result names the address it reached, and a connect failure says so in plain words.
        st = _probe_statuses(sc)
        assert st["api/dead"]["address"] == f"127.0.0.1:{dead}", st["api/dead"]
        assert st["api/dead"]["target_address"] == f"127.0.0.1:{dead}", st["api/dead"]
        assert st["api/dead"]["message"] == f"connect to 127.0.0.1:{dead} failed: connection refused", st
        assert st["api/live"]["address"] == f"127.0.0.1:{p1.port}", st["api/live"]
        log = tail(sc.log, 400)
        changed = [ln for ln in log.splitlines() if "probe result changed" in ln and "api/dead" in ln]
        assert changed and f"address=127.0.0.1:{dead}" in changed[0] and "connect_error" in changed[0] \
            and "connection refused" in changed[0], log

        # Consul goes away: the warning names the failure in plain words, not a type dump.
        fake.refuse()
        wait_for(lambda: "consul query failed" in tail(sc.log, 400), 8, "consul failure logged")
        failed = [ln for ln in tail(sc.log, 400).splitlines() if "consul query failed" in ln]
        assert f"connect to {fake.address} failed: connection refused" in failed[0], failed
        assert "SingleConnectionFailure" not in failed[0] and "NIOConnectionError" not in failed[0], failed
    finally:
        fake.stop()


def test_consul_unmapped_datacenter_is_logged_once_counted_and_not_probed(probe_procs):
    """A listed datacenter with no region: its instances are not probed (through the upstream
    they would report the upstream's health), each is logged once and counted."""
    u = probe_procs.grpc_server()
    p1 = probe_procs.grpc_server()
    fake = FakeConsul().start()
    try:
        fake.set_service("api", [entry("api", "one", p1.port)], dc="dc1")
        fake.set_service("api", [entry("api", "far", p1.port)], dc="dc2")
        sc = probe_procs.sidecar({
            "upstream": u.port, "hop": "prober", "region": "a", "log_level": "info",
            "probes": {"interval": "200ms", "timeout": "500ms", "consul": {
                "address": fake.address, "wait": "1s", "services": [{"name": "api"}],
                "datacenters": ["dc1", "dc2"], "region_for_datacenter": {"dc1": "a"}}}},
            name="sidecar-consul-unmapped")
        wait_for(lambda: value(metrics_text(sc), TOTAL, target="api/one", result="success") >= 1, 6, "api/one probed")
        wait_for(lambda: value(metrics_text(sc), UNMAPPED, source="consul", datacenter="dc2") == 1, 4,
                 "api/far counted as unmapped")
        # Several blocking-query rounds (wait 1s) with the same answer: still logged and counted once.
        time.sleep(2.5)
        text = metrics_text(sc)
        assert value(text, UNMAPPED, source="consul", datacenter="dc2") == 1
        assert not series(text, TOTAL, target="api/far"), "an unmapped target was probed"
        assert health_checks(u.port) == 0
        lines = [ln for ln in tail(sc.log, 400).splitlines() if "maps to no region" in ln]
        assert len(lines) == 1 and "api/far" in lines[0] and "dc2" in lines[0], lines
        # A second instance there: it alone is new.
        fake.set_service("api", [entry("api", "far", p1.port), entry("api", "far2", p1.port)], dc="dc2")
        wait_for(lambda: value(metrics_text(sc), UNMAPPED, source="consul", datacenter="dc2") == 2, 4,
                 "api/far2 counted")
        lines = [ln for ln in tail(sc.log, 400).splitlines() if "maps to no region" in ln]
        assert len(lines) == 2 and "api/far2" in lines[1], lines
    finally:
        fake.stop()


def test_consul_shutdown_logs_no_false_query_failure(probe_procs):
    """SIGTERM while a blocking query is waiting: the query ends because of the shutdown, which
    is not a Consul failure."""
    u = probe_procs.grpc_server()
    fake = FakeConsul().start()
    try:
        fake.set_service("api", [entry("api", "one", u.port)])
        sc = probe_procs.sidecar({
            "upstream": u.port, "hop": "prober", "region": "a", "log_level": "info",
            "probes": {"interval": "200ms", "timeout": "500ms", "consul": {
                "address": fake.address, "wait": "30s", "services": [{"name": "api"}]}}},
            name="sidecar-consul-stop")
        wait_for(lambda: "consul targets updated" in tail(sc.log, 100), 6, "consul targets loaded")
        wait_for(lambda: any("index" in r["query"] for r in fake.requests_for("api")), 4, "a blocking query")
        assert sc.stop(10) == 0
        log = tail(sc.log, 200)
        assert "stopped" in log and "consul query failed" not in log, log
    finally:
        fake.stop()


def test_shutdown_with_probes_in_flight_counts_and_logs_none_of_them(probe_procs, health_servers):
    """SIGTERM with probes in flight (the target answers in 1.5 s): the sidecar ends them
    itself, which says nothing about the target, so none is counted or logged as a changed
    result, and no client ever waited, so the log does not say a drain timeout passed."""
    _, slow = health_servers
    before = health_checks(slow.port)
    sc = probe_procs.sidecar({
        "upstream": slow.port, "hop": "prober", "region": "a", "log_level": "info",
        "probes": {"interval": "200ms", "timeout": "5s", "targets": [
            {"name": f"slow{i}", "address": f"127.0.0.1:{slow.port}", "region": "a"} for i in range(5)]}},
        name="sidecar-probes-stop")
    wait_for(lambda: health_checks(slow.port) >= before + 5, 4, "every target's first probe in flight")
    assert value(metrics_text(sc), TOTAL) == 0, "no probe has ended yet"
    assert sc.stop(10) == 0
    log = tail(sc.log, 400)
    assert "stopped" in log, log
    assert "probe result changed" not in log, log
    assert "drain timeout" not in log, log


# --------------------------------------------------------------------------
# 5. targets file
# --------------------------------------------------------------------------

def _write_atomic(path, text):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_targets_file_reload_invalid_and_json(probe_procs, tmp_path):
    server = probe_procs.grpc_server()
    a = f"127.0.0.1:{server.port}"
    path = tmp_path / "targets.yaml"
    _write_atomic(path, f"""
- name: t1
  address: "{a}"
  region: a
- name: t2
  address: "{a}"
  region: a
  service: {TEST_SVC_NAME}
""")
    sc = probe_procs.sidecar({
        "upstream": server.port, "hop": "prober", "region": "a", "log_level": "info",
        "probes": {"interval": "200ms", "timeout": "500ms", "targets_file": str(path),
                   "targets_file_refresh": "200ms"}})

    def state(n, present, absent=()):
        def check():
            t = metrics_text(sc)
            if value(t, TARGETS, source="file") != n:
                return None
            if not all(value(t, TOTAL, target=x, result="success") >= 1 for x in present):
                return None
            return t
        return check

    wait_for(state(2, ["t1", "t2"]), 5, "t1 and t2 from the file")

    # Rewrite: t2 out, t3 in.
    t0 = time.monotonic()
    _write_atomic(path, f"""
- {{name: t1, address: "{a}", region: a}}
- {{name: t3, address: "{a}", region: a, kind: health, interval: 300ms, timeout: 400ms}}
""")
    wait_for(state(2, ["t3"]), 2.5, "t3 after a rewrite")
    assert time.monotonic() - t0 < 2.0, "reload took over 2 s"
    time.sleep(0.3)
    t2 = _count(sc, "t2")
    time.sleep(0.8)
    assert _count(sc, "t2") == t2, "t2 still probed after removal"

    # Invalid YAML: logged, counted, old set kept.
    log_lines = len(tail(sc.log, 10000).splitlines())
    _write_atomic(path, "- name: broken\n  address: [127.0.0.1:1\n  region: a\n")
    wait_for(lambda: value(metrics_text(sc), DISCOVERY_ERRORS, source="file", reason="invalid") >= 1,
             2.5, "file invalid counted")
    new_log = "\n".join(tail(sc.log, 10000).splitlines()[log_lines:])
    assert "targets file rejected, keeping the previous targets" in new_log, new_log
    assert str(path) in new_log, new_log
    _growing(sc, "t1")
    _growing(sc, "t3")
    assert value(metrics_text(sc), TARGETS, source="file") == 2
    # Valid YAML, invalid target (no region): also rejected.
    _write_atomic(path, f"- {{name: t9, address: \"{a}\"}}\n")
    wait_for(lambda: value(metrics_text(sc), DISCOVERY_ERRORS, source="file", reason="invalid") >= 2,
             2.5, "second invalid file counted")
    # ... and logged too, not only counted: each rejected edit has its own line and cause.
    new_log = "\n".join(tail(sc.log, 10000).splitlines()[log_lines:])
    rejected = [ln for ln in new_log.splitlines() if "targets file rejected" in ln]
    assert len(rejected) == 2 and "region" in rejected[1], new_log
    assert value(metrics_text(sc), TARGETS, source="file") == 2
    assert not series(metrics_text(sc), TOTAL, target="t9")

    # A JSON file (same path, JSON content) works too.
    _write_atomic(path, json.dumps([
        {"name": "t1", "address": a, "region": "a"},
        {"name": "t4", "address": a, "region": "a", "kind": "health", "service": TEST_SVC_NAME},
        {"name": "t5", "address": a, "region": "a"},
    ]))
    wait_for(state(3, ["t4", "t5"]), 2.5, "t4 and t5 from JSON")
    assert "targets file loaded" in tail(sc.log, 50)


def test_targets_file_missing_at_start_is_reported(probe_procs, tmp_path):
    """A targets_file that does not exist (a typo) must not be silently ignored: it is an
    error like an unreadable file (log line + discovery error), and probing starts once it
    appears."""
    server = probe_procs.grpc_server()
    path = tmp_path / "not-yet.yaml"
    sc = probe_procs.sidecar({
        "upstream": server.port, "hop": "prober", "region": "a", "log_level": "info",
        "probes": {"interval": "200ms", "timeout": "500ms", "targets_file": str(path),
                   "targets_file_refresh": "200ms"}})
    time.sleep(1.0)
    # It appears: picked up.
    _write_atomic(path, f"- {{name: late, address: \"127.0.0.1:{server.port}\", region: a}}\n")
    wait_for(lambda: value(metrics_text(sc), TOTAL, target="late", result="success") >= 1, 2.5,
             "the file's target once it exists")
    log = tail(sc.log, 200)
    errors = value(metrics_text(sc), DISCOVERY_ERRORS, source="file", reason="missing")
    assert errors >= 1 and str(path) in log and "missing" in log, (
        f"missing targets file at start: {errors} discovery errors, log:\n{log}")


def test_targets_file_duplicate_names_rejected(probe_procs, tmp_path):
    """The static config rejects two targets with the same name and kind ("duplicate
    target"); the targets file must too (else two targets feed one metric series)."""
    server = probe_procs.grpc_server()
    a = f"127.0.0.1:{server.port}"
    path = tmp_path / "targets.json"
    _write_atomic(path, json.dumps([{"name": "good", "address": a, "region": "a"}]))
    sc = probe_procs.sidecar({
        "upstream": server.port, "hop": "prober", "region": "a", "log_level": "info",
        "probes": {"interval": "200ms", "timeout": "500ms", "targets_file": str(path),
                   "targets_file_refresh": "200ms"}})
    wait_for(lambda: value(metrics_text(sc), TOTAL, target="good", result="success") >= 1, 3, "good probed")
    _write_atomic(path, json.dumps([{"name": "dup", "address": a, "region": "a"},
                                    {"name": "dup", "address": f"127.0.0.1:{free_port()}", "region": "a"}]))
    time.sleep(1.2)
    text = metrics_text(sc)
    assert value(text, DISCOVERY_ERRORS, source="file", reason="invalid") >= 1 \
        and value(text, TARGETS, source="file") == 1, (
        "duplicate names accepted: targets_file=" f"{value(text, TARGETS, source='file')}, "
        f"dup results {results_of(text, 'dup')}")
