"""Series per route and bytes per scrape at the default `max_routes`.

Drives `max_routes` (128, the default) distinct gRPC routes through one sidecar (one OK unary call each, the
shape of ordinary traffic, against a fake upstream that answers any method) and scrapes
/metrics. The numbers printed here are the ones in Docs/metrics.md ("Series per route").
Run with `-s` to see them; point INSIGHT_SIDECAR at an older binary to measure it.
"""

import grpc

from conftest import make_channel, metrics_text, parse_metrics

ROUTES = 128  # the default max_routes
# Realistic lengths: `acme.payments.v1.PaymentService000` / `AuthorizePayment000`.
SERVICE = "acme.payments.v1.PaymentService{:03d}"
METHOD = "AuthorizePayment{:03d}"
MAX_SCRAPE_BYTES = 1_000_000


def _series(text):
    return len(parse_metrics(text))


def test_series_per_route_and_scrape_size(hop_procs):
    upstream = hop_procs.fake_grpc_upstream()
    sc = hop_procs.sidecar(upstream.port, "mediary-a", "eu-west")
    # One call first so that every family that is not per route exists.
    ch = make_channel(sc.addr)
    try:
        ch.unary_unary("/warm.up.v1.Warm/Up")(b"x", timeout=5)
        base = metrics_text(sc)
        for i in range(ROUTES - 1):
            ch.unary_unary(f"/{SERVICE.format(i)}/{METHOD.format(i)}")(b"x", timeout=5)
    finally:
        ch.close()
    text = metrics_text(sc)
    per_route = (_series(text) - _series(base)) / (ROUTES - 1)
    size = len(text.encode())
    print(f"\n{ROUTES} routes: {_series(text)} series, {size} bytes per scrape, "
          f"{per_route:.1f} series per route ({(size - len(base.encode())) / (ROUTES - 1):.0f} bytes)")

    # No route has series for what never happened on it: no probe series without probes,
    # no streaming histogram for unary calls.
    samples = parse_metrics(text)
    assert not [s for s in samples if s[1].get("source") == "probe"]
    assert not [s for s in samples if s[0].startswith("insight_stream_duration_seconds")]
    # requests_total (1) + upstream duration and ttfb histograms (2 x 20) + messages (2).
    assert per_route == 43
    # Ordinary traffic at the default cap fits the series budget: nothing folded.
    assert sum(v for n, _, v in samples if n == "insight_series_overflow_total") == 0
    assert size <= MAX_SCRAPE_BYTES, size


# ---- the worst case a client alone can cause ----------------------------------------------

# Names as long as the sidecar keeps them (128 characters), and every call shape per route.
LONG = 110


def _worst_case_traffic(port, routes, long=LONG):
    """Per route, with and without `insight-probe`: an OK call, a 2-message call, a call with
    `grpc-timeout: 0n` and a cancelled call (the shape of /work/breakit/card_worst.py)."""
    import socket
    import time

    import h2.config
    import h2.connection

    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.01)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        normalize_outbound_headers=False))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    sid = [1]

    def pump(seconds):
        end = time.time() + seconds
        while time.time() < end:
            try:
                d = s.recv(1 << 20)
            except socket.timeout:
                continue
            if not d:
                return
            c.receive_data(d)
            s.sendall(c.data_to_send())

    def call(path, extra=(), msgs=1, cancel=False):
        i = sid[0]
        sid[0] += 2
        c.send_headers(i, [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                           ("content-type", "application/grpc"), ("te", "trailers")] + list(extra))
        for k in range(msgs):
            c.send_data(i, b"\x00\x00\x00\x00\x01x", end_stream=(k == msgs - 1 and not cancel))
        if cancel:
            c.reset_stream(i, 8)
        s.sendall(c.data_to_send())

    try:
        for r in range(routes):
            path = f"/acme.svc{r:05d}" + "S" * long + f"/{r}" + "M" * long
            for extra in ((), (("insight-probe", "1"),)):
                call(path, extra)
                call(path, extra, msgs=2)
                call(path, extra + (("grpc-timeout", "0n"),))
                call(path, extra, cancel=True)
            pump(0.02)
        pump(1.5)
    finally:
        s.close()


def _value(samples, name):
    return sum(v for n, _, v in samples if n == name)


def test_worst_case_scrape_stays_under_the_bound(hop_procs):
    """Every call shape on 2 x max_routes routes with 128-character names: the series budget
    keeps the scrape under 1 MB (without it: about 16,800 series, 5.7 MB)."""
    upstream = hop_procs.fake_grpc_upstream()
    sc = hop_procs.sidecar(upstream.port, "mediary-a", "eu-west")
    _worst_case_traffic(sc.port, 2 * ROUTES)
    text = metrics_text(sc)
    samples = parse_metrics(text)
    size = len(text.encode())
    print(f"\nworst case, {2 * ROUTES} routes, names {len('acme.svc00000') + LONG}/{LONG + 5} characters: "
          f"{len(samples)} series, {size} bytes per scrape, "
          f"series overflow {_value(samples, 'insight_series_overflow_total'):.0f}")
    assert size <= MAX_SCRAPE_BYTES, size
    # The budget was what held it, and what it folded is still counted, as `other`.
    assert _value(samples, "insight_series_overflow_total") > 0
    folded = [v for n, labels, v in samples
              if n == "insight_requests_total" and labels.get("service") == "other"]
    assert sum(folded) > 0
    calls = sum(v for n, _, v in samples if n == "insight_requests_total")
    assert calls >= 2 * ROUTES * 8 * 0.9, calls


def test_long_names_keep_one_series_per_route(hop_procs):
    """Routes that differ only after the 128th character get a series each (hash suffix)."""
    upstream = hop_procs.fake_grpc_upstream()
    sc = hop_procs.sidecar(upstream.port, "mediary-a", "eu-west")
    service = "acme.v1." + "S" * 200
    ch = make_channel(sc.addr)
    try:
        for i in range(3):
            ch.unary_unary(f"/{service}{i}/Call")(b"x", timeout=5)
    finally:
        ch.close()
    samples = parse_metrics(metrics_text(sc))
    services = {labels["service"] for n, labels, _ in samples if n == "insight_requests_total"}
    assert len(services) == 3, services
    assert all(len(s) == 128 and "~" in s for s in services), services
