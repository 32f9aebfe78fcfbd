#!/usr/bin/env bash
# The README's test command: installs dependencies, builds the normal and the ASan+UBSan trees,
# and runs the whole ctest suite in both. Needs ../shared (goldens, tokenizer) beside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -d ../shared/golden ]; then
  echo "error: ../shared/golden not found beside the project root ($(pwd)/../shared)." >&2
  echo "       The tests read DeepSeek's reference goldens from there." >&2
  exit 1
fi
jobs=$(nproc 2>/dev/null || echo 2)
bash scripts/build.sh build
(cd build && ctest --output-on-failure -j"$jobs")
if [ "${DSV4_SKIP_ASAN:-0}" != "1" ]; then
  # -O1 -g1 keeps the sanitizer build (and its test run) short while still giving stack traces.
  # The tokenizer CLI goldens re-run the binary dozens of times, and the forward-pass consistency
  # checks (chunked vs one-shot vs token-by-token, ~3 min under ASan) run the same model code as the
  # golden tests; both run in the normal tree only (the goldens run in both).
  bash scripts/build.sh build-asan -DDSV4_SANITIZE=ON -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_CXX_FLAGS="-O1 -g1" -DDSV4_BUILD_BENCH=OFF
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j"$jobs" -E '^(TokenizerCli|Consistency)\.')
fi
