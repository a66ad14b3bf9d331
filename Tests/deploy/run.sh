#!/usr/bin/env bash
# Deploy checks (issue 7): Prometheus rules (promtool check + unit tests), Kubernetes manifests
# against the sidecar's CLI and check-config, and every rule/dashboard query against a real
# Prometheus scraping live sidecars. Called by `make test`; about 25 s.
#
# Needs: prometheus + promtool (Debian `prometheus`), python3 with pytest, PyYAML, grpcio,
# opentelemetry-proto (the OTLP receiver of Tests/e2e, for the exemplar → trace check) and
# grpcio-health-checking, the sidecar binary (INSIGHT_SIDECAR, default
# .build/debug/insight-sidecar). Optional: kubectl or kustomize (renders the overlays with
# `kustomize build`; without it the raw files are checked).
#
# Exits non-zero on any failure; the last line is "N passed, M failed".
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
export INSIGHT_SIDECAR="${INSIGHT_SIDECAR:-$REPO/.build/debug/insight-sidecar}"
export INSIGHT_DEPLOY_LOG_DIR="${INSIGHT_DEPLOY_LOG_DIR:-$(mktemp -d /tmp/insight-deploy-XXXXXX)}"
JUNIT="$INSIGHT_DEPLOY_LOG_DIR/junit.xml"

cd "$REPO"
# pytest kills what it starts (fixtures and a session hook); `timeout` bounds the whole run,
# and its process group kill takes any leftover child with it.
timeout --kill-after=10 150 "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs \
    --junitxml="$JUNIT" "$HERE" "$@"
rc=$?

counts=$("$PYTHON" - "$JUNIT" <<'PY' 2>/dev/null
import sys, xml.etree.ElementTree as ET
t = f = s = 0
for suite in ET.parse(sys.argv[1]).getroot().iter("testsuite"):
    t += int(suite.get("tests", 0)); s += int(suite.get("skipped", 0))
    f += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
print(t - f - s, f, s)
PY
)
if [ -z "$counts" ]; then
    echo "logs: $INSIGHT_DEPLOY_LOG_DIR"
    echo "0 passed, 1 failed"
    exit 1
fi
read -r passed failed skipped <<<"$counts"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi   # e.g. timeout or collection error
echo "logs: $INSIGHT_DEPLOY_LOG_DIR${skipped:+ ($skipped skipped)}"
echo "$passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
