# Insight: the two commands are `make run` and `make test`. Every target installs what it
# needs when it is missing, so a fresh Debian 12 machine (as root) needs nothing by hand.

SHELL := /bin/bash
APT_PACKAGES := libnghttp2-dev libssl-dev pkg-config nghttp2-client nghttp2-server nghttp2-proxy haproxy openssl curl prometheus chromium
PY_PACKAGES := grpcio grpcio-tools grpcio-health-checking protobuf h2 pytest pyyaml opentelemetry-proto
PYTHON ?= python3
SWIFT_BUILD_FLAGS ?=
BIN := .build/debug/insight-sidecar

.PHONY: deps build release test unit e2e deploy-checks fuzz sanitize lint format run run-backend bench clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@$(PYTHON) -c "import grpc, grpc_health, google.protobuf, h2, pytest, yaml, opentelemetry.proto" 2>/dev/null || \
		$(PYTHON) -m pip install -q $(PY_PACKAGES)
	@# haproxy is installed as a peer for tests and benchmarks, not as a system service.
	@for s in haproxy prometheus prometheus-node-exporter; do systemctl is-active --quiet $$s 2>/dev/null && systemctl stop $$s; done; true

build: deps
	swift build $(SWIFT_BUILD_FLAGS)

release: deps
	swift build -c release --product insight-sidecar

lint:
	swift format lint --strict --recursive Sources Tests Package.swift

format:
	swift format --in-place --recursive Sources Tests Package.swift

unit: build
	swift test $(SWIFT_BUILD_FLAGS)

e2e: build
	INSIGHT_SIDECAR=$(CURDIR)/$(BIN) INSIGHT_REQUIRE_SIDECAR=1 $(PYTHON) -m pytest -q -p no:cacheprovider --durations=12 Tests/e2e

# The Swift tests under AddressSanitizer and ThreadSanitizer, each in its own build folder.
sanitize: deps
	@# INSIGHT_SANITIZER: the diagnosis replay tests (pure single-threaded arithmetic) are skipped.
	INSIGHT_SANITIZER=address LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan.supp swift test --sanitize=address --scratch-path .build-asan
	@# Swift 5 language mode for the TSan build only: under -sanitize=thread, Swift 6.3 reported
	@# a region-isolation error ("sending 'logger' risks causing data races") inside swift-otel
	@# 1.6 that the normal build did not; language mode changes diagnostics, not the code.
	@# swift-otel is no longer a dependency; the flag stays until a Swift 6 mode TSan build is checked.
	INSIGHT_SANITIZER=thread swift test --sanitize=thread --scratch-path .build-tsan -Xswiftc -swift-version -Xswiftc 5

deploy-checks: build
	INSIGHT_SIDECAR=$(CURDIR)/$(BIN) bash Tests/deploy/run.sh

# Each libFuzzer target for FUZZ_SECONDS (timing headers, config loader, HTTP/2 session).
FUZZ_SECONDS ?= 60
fuzz: deps
	bash Fuzz/run.sh $(FUZZ_SECONDS)

test: deps lint unit e2e deploy-checks fuzz
	@echo "make test: all suites passed"

# The main job: the embedded two-region demo with its status page (Ctrl-C stops it).
run: build
	$(BIN) demo

# The sidecar alone in front of the Python gRPC test backend.
run-backend: build
	@bash Deploy/local/run-local.sh $(BIN)

# The proxy comparison (Benchmarks/run.sh), CPU per request side by side (Benchmarks/side-by-side.sh, h2c and TLS), the tracing cost (Benchmarks/tracing.sh), TLS termination (Benchmarks/run-tls.sh),
# a hop with inner hops (Benchmarks/chain.sh).
bench: deps
	Benchmarks/run.sh
	Benchmarks/side-by-side.sh
	Benchmarks/side-by-side.sh --tls
	Benchmarks/tracing.sh --no-build
	Benchmarks/run-tls.sh --no-build
	Benchmarks/chain.sh

clean:
	rm -rf .build
