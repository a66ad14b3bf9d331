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
    assert size <= MAX_SCRAPE_BYTES, size
