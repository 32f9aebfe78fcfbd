#!/usr/bin/env bash
# Load test of `dsv4 serve`: 64 concurrent streaming clients × 2000 requests with random
# mid-stream disconnects (tests/server/load_test.cc). Prints throughput, p50/p99 latency, and
# checks results against single-request greedy output, slot leaks and RSS.
# Usage: bench/serve_load.sh [BUILD_DIR]   (env: DSV4_LOAD_CLIENTS, DSV4_LOAD_REQUESTS, DSV4_LOAD_NP,
#        DSV4_LOAD_MODEL)
set -euo pipefail
BUILD=${1:-build}
: "${DSV4_LOAD_CLIENTS:=64}" "${DSV4_LOAD_REQUESTS:=2000}"
export DSV4_LOAD_CLIENTS DSV4_LOAD_REQUESTS
exec "$BUILD/dsv4_server_tests" --gtest_also_run_disabled_tests --gtest_filter='ServerLoad.*'
