#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer and runs each for N seconds (default 60).
#
#   ./run.sh [SECONDS] [TARGET...]      e.g.  ./run.sh 120 FuzzH2Session
#
# Corpora grow in Corpus/<target>/ (keep them). A crash, leak, timeout or OOM is saved as
# Crashes/<Target>-<kind>-<hash>; reproduce with
#   .build-fuzz/release/<Target> Crashes/<file>
# The scratch path .build-fuzz/ is ignored by the repository's .gitignore (`.build-*/`).
#
# Environment: FUZZ_BUILD_JOBS (swift build -j), FUZZ_BUILD_ONLY (build one product),
# FUZZ_MAX_LEN (default 8192), FUZZ_EXTRA (more libFuzzer flags, e.g. "-fork=1
# -ignore_crashes=1" to keep going past a known crash).
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET="${1:-60}"
shift || true
ALL=(FuzzTimingHeaders FuzzConfig FuzzH2Session FuzzBridge)
[ "$#" -gt 0 ] && TARGETS=("$@") || TARGETS=("${ALL[@]}")

# -enable-testing: FuzzTimingHeaders uses `@testable import Sidecar` (the parser is internal),
# FuzzBridge `@testable import H2Proxy` (the connections and the loop are internal).
# -use-ld=lld: gold crashes (internal error in format_file_lineno) linking these targets.
swift build -c release -Xswiftc -sanitize=fuzzer -Xswiftc -enable-testing -Xswiftc -use-ld=lld \
    --scratch-path .build-fuzz ${FUZZ_BUILD_ONLY:+--product "$FUZZ_BUILD_ONLY"} \
    ${FUZZ_BUILD_JOBS:+-j "$FUZZ_BUILD_JOBS"}
BIN="$(swift build -c release --scratch-path .build-fuzz --show-bin-path)"

corpus_dir() {
    case "$1" in
        FuzzTimingHeaders) echo timing ;;
        FuzzConfig) echo config ;;
        FuzzH2Session) echo h2session ;;
        FuzzBridge) echo bridge ;;
    esac
}
dict_for() {
    case "$1" in
        FuzzTimingHeaders) echo "-dict=timing.dict" ;;
        FuzzConfig) echo "-dict=config.dict" ;;
    esac
}

# Let libFuzzer, not Swift's backtracer, handle a trap (SIGILL), so the input is saved.
export SWIFT_BACKTRACE=enable=no
mkdir -p Crashes
status=0
for t in "${TARGETS[@]}"; do
    c="Corpus/$(corpus_dir "$t")"
    mkdir -p "$c"
    echo "=== $t: ${SECONDS_PER_TARGET}s, corpus $c ($(ls "$c" | wc -l) inputs)"
    # shellcheck disable=SC2046
    if ! "$BIN/$t" "$c" $(dict_for "$t") \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="${FUZZ_MAX_LEN:-8192}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="Crashes/$t-" ${FUZZ_EXTRA:-}; then
        echo "!!! $t found a problem; see Crashes/$t-*"
        status=1
    fi
done
exit $status
